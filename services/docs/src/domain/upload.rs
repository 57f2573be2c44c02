//! Staged uploads: content received ahead of the document it will become.

use chrono::{DateTime, Duration, Utc};

use super::document::Content;
use super::values::{Actor, DocumentId, DocumentName, FileId, UploadId};

/// Where a staged upload is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Received whole, waiting to be claimed until it expires.
    Staged,
    /// Became a version of a document; its content belongs to it now.
    Claimed {
        /// The file of that document.
        file_id: FileId,
        /// The document.
        document_id: DocumentId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Not claimed in time; its content is (being) deleted.
    Expired,
}

/// A content received whole and accepted, not yet (or already) part of a
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Its id (also its content's).
    pub id: UploadId,
    /// The sanitised name of the uploaded file.
    pub name: DocumentName,
    /// What was received.
    pub content: Content,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// Who sent it.
    pub created_by: Actor,
    /// When it expires if nothing claims it.
    pub expires_at: DateTime<Utc>,
    /// Its state.
    pub state: UploadState,
}

/// Why an upload cannot become a document version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    /// Its time to be claimed is over.
    #[error("the upload expired")]
    Expired,
    /// A document already has it.
    #[error("the upload was already attached to a document")]
    Claimed,
}

impl Upload {
    /// When an upload received at `now` expires with a time to live `ttl`.
    pub fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
        now + ttl
    }

    /// Makes the upload a version of `document_id` of `file_id`, unless it
    /// expired or is claimed already.
    pub fn claim(
        &mut self,
        file_id: FileId,
        document_id: DocumentId,
        now: DateTime<Utc>,
    ) -> Result<(), ClaimRefusal> {
        match self.state {
            UploadState::Claimed { .. } => Err(ClaimRefusal::Claimed),
            UploadState::Expired => Err(ClaimRefusal::Expired),
            UploadState::Staged if now >= self.expires_at => Err(ClaimRefusal::Expired),
            UploadState::Staged => {
                self.state = UploadState::Claimed {
                    file_id,
                    document_id,
                    at: now,
                };
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MediaType, Sha256Digest};
    use uuid::Uuid;

    fn staged(now: DateTime<Utc>) -> Upload {
        Upload {
            id: UploadId::generate(),
            name: DocumentName::sanitise("acta.pdf").unwrap(),
            content: Content {
                id: UploadId::generate(),
                media_type: MediaType::parse("application/pdf").unwrap(),
                size: 1,
                sha256: Sha256Digest::from_bytes([0; 32]),
            },
            created_at: now,
            created_by: Actor {
                id: "u".into(),
                name: "n".into(),
            },
            expires_at: Upload::expiry(now, Duration::hours(24)),
            state: UploadState::Staged,
        }
    }

    #[test]
    fn given_a_staged_upload_when_claimed_in_time_then_it_belongs_to_the_document() {
        let now = Utc::now();
        let mut upload = staged(now);
        let (file, document) = (FileId(Uuid::now_v7()), DocumentId::generate());
        upload
            .claim(file, document, now + Duration::hours(23))
            .unwrap();
        assert!(matches!(
            upload.state,
            UploadState::Claimed { file_id, document_id, .. } if file_id == file && document_id == document
        ));
    }

    #[test]
    fn given_a_claimed_upload_when_claimed_again_then_it_is_refused() {
        let now = Utc::now();
        let mut upload = staged(now);
        upload
            .claim(FileId(Uuid::now_v7()), DocumentId::generate(), now)
            .unwrap();
        let again = upload.claim(FileId(Uuid::now_v7()), DocumentId::generate(), now);
        assert_eq!(again, Err(ClaimRefusal::Claimed));
    }

    #[test]
    fn given_an_upload_past_its_expiry_then_it_cannot_be_claimed() {
        let now = Utc::now();
        let mut upload = staged(now);
        let late = upload.claim(
            FileId(Uuid::now_v7()),
            DocumentId::generate(),
            now + Duration::hours(24),
        );
        assert_eq!(late, Err(ClaimRefusal::Expired));
        upload.state = UploadState::Expired;
        assert_eq!(
            upload.claim(FileId(Uuid::now_v7()), DocumentId::generate(), now),
            Err(ClaimRefusal::Expired)
        );
    }
}
