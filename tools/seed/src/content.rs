//! The bytes of the demo documents, made in code so that nothing is
//! shipped: a one-page PDF letter any viewer opens, and a PNG floor plan.
//! The same document always has the same bytes.

use crate::plan::Content;

/// The name of the (fictitious) administration on every letter.
const LETTERHEAD: &str = "Ayuntamiento de Villanueva del Río";

/// Characters per line of body text (10 pt Helvetica on an A4 page with
/// 56 pt margins).
const WRAP: usize = 92;

/// A generated document: its media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// What docs will recognise it as.
    pub media_type: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Makes the bytes of `content`; `footer` closes a letter.
pub fn generate(content: &Content, footer: &str) -> Generated {
    match content {
        Content::Pdf { title, paragraphs } => Generated {
            media_type: "application/pdf",
            bytes: pdf(title, paragraphs, footer),
        },
        Content::FloorPlan => Generated {
            media_type: "image/png",
            bytes: floor_plan_png(),
        },
    }
}

/// A one-page A4 PDF 1.4: the letterhead, `title` in bold, the
/// `paragraphs` wrapped, and `footer` in small type at the bottom. Text is
/// in the standard Helvetica fonts with WinAnsi encoding (Spanish accents
/// included); the cross-reference table is exact.
pub fn pdf(title: &str, paragraphs: &[&str], footer: &str) -> Vec<u8> {
    let mut page = String::new();
    page.push_str("BT /F2 12 Tf 56 790 Td (");
    page.push_str(&pdf_text(&LETTERHEAD.to_uppercase()));
    page.push_str(") Tj ET\n0.6 G 56 778 m 539 778 l S 0 G\n");
    page.push_str("BT /F2 14 Tf 56 745 Td (");
    page.push_str(&pdf_text(title));
    page.push_str(") Tj ET\nBT /F1 10 Tf 14 TL 56 715 Td\n");
    for paragraph in paragraphs {
        for line in wrap(paragraph, WRAP) {
            page.push('(');
            page.push_str(&pdf_text(&line));
            page.push_str(") Tj T*\n");
        }
        page.push_str("T*\n");
    }
    page.push_str("ET\nBT /F1 8 Tf 10 TL 56 70 Td\n");
    for line in wrap(footer, 110) {
        page.push('(');
        page.push_str(&pdf_text(&line));
        page.push_str(") Tj T*\n");
    }
    page.push_str("ET\n");
    let stream = latin1(&page);

    let font = |name: &str| {
        format!("<< /Type /Font /Subtype /Type1 /BaseFont /{name} /Encoding /WinAnsiEncoding >>")
            .into_bytes()
    };
    let mut contents = format!("<< /Length {} >>\nstream\n", stream.len()).into_bytes();
    contents.extend(&stream);
    contents.extend(b"\nendstream");
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>".to_vec(),
        font("Helvetica"),
        font("Helvetica-Bold"),
        contents,
    ];

    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (n, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", n + 1).as_bytes());
        out.extend(object);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// Splits `text` into lines of at most `width` characters at spaces (a
/// longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` as the inside of a PDF literal string: parentheses and
/// backslashes escaped; characters WinAnsi lacks become `?`.
fn pdf_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if winansi(c).is_some() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// The WinAnsi code of `c`, if it has one (printable ASCII, Latin-1 and
/// the typographic punctuation a Spanish letter uses).
fn winansi(c: char) -> Option<u8> {
    match c {
        ' '..='~' => Some(c as u8),
        '\u{a0}'..='\u{ff}' => Some(c as u32 as u8),
        '€' => Some(0x80),
        '‘' => Some(0x91),
        '’' => Some(0x92),
        '“' => Some(0x93),
        '”' => Some(0x94),
        '•' => Some(0x95),
        '–' => Some(0x96),
        '—' => Some(0x97),
        _ => None,
    }
}

/// The page content in WinAnsi bytes (it holds only what [`pdf_text`]
/// let through, and ASCII operators).
fn latin1(page: &str) -> Vec<u8> {
    page.chars().map(|c| winansi(c).unwrap_or(b'?')).collect()
}

/// Width and height of the floor plan, in pixels.
const PLAN_SIZE: (u32, u32) = (320, 200);

/// A 320×200 PNG (2-bit palette) of a small premises' floor plan: a grid,
/// the outer walls, two inner walls with their doors, and the entrance
/// marked in red.
pub fn floor_plan_png() -> Vec<u8> {
    const WHITE: u8 = 0;
    const GRID: u8 = 1;
    const WALL: u8 = 2;
    const ENTRANCE: u8 = 3;
    let (width, height) = PLAN_SIZE;
    let colour = |x: u32, y: u32| -> u8 {
        let inside = (20..300).contains(&x) && (20..180).contains(&y);
        let outer = inside && !((24..296).contains(&x) && (24..176).contains(&y));
        let entrance = (130..170).contains(&x) && (172..180).contains(&y);
        // An inner wall at x = 200 with a door, and one at y = 100 on the
        // right with a door.
        let inner = ((198..202).contains(&x) && (24..176).contains(&y) && !(120..150).contains(&y))
            || ((200..296).contains(&x) && (98..102).contains(&y) && !(230..260).contains(&x));
        if entrance {
            ENTRANCE
        } else if outer || inner {
            WALL
        } else if x.is_multiple_of(20) || y.is_multiple_of(20) {
            GRID
        } else {
            WHITE
        }
    };
    // Each row: filter type 0, then four 2-bit pixels per byte.
    let row_bytes = (width as usize).div_ceil(4);
    let mut raw = Vec::with_capacity((row_bytes + 1) * height as usize);
    for y in 0..height {
        raw.push(0);
        for byte in 0..row_bytes {
            let mut packed = 0u8;
            for i in 0..4 {
                let x = (byte * 4 + i) as u32;
                let pixel = if x < width { colour(x, y) } else { WHITE };
                packed |= pixel << (6 - 2 * i);
            }
            raw.push(packed);
        }
    }

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    // Bit depth 2, colour type 3 (palette), deflate, adaptive filters, no
    // interlace.
    header.extend([2, 3, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &header);
    png_chunk(
        &mut out,
        b"PLTE",
        &[
            0xff, 0xff, 0xff, // white
            0xd0, 0xd8, 0xe0, // grid
            0x1f, 0x3a, 0x5f, // walls
            0xc0, 0x20, 0x20, // entrance
        ],
    );
    png_chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// `data` as a zlib stream of uncompressed (stored) deflate blocks: the
/// plan is small, so compressing it is not worth a dependency.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(usize::from(u16::MAX)).peekable();
    if blocks.peek().is_none() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(block);
    }
    out.extend(adler32(data).to_be_bytes());
    out
}

/// CRC-32 (IEEE, reflected), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Adler-32, as zlib streams end with.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn a_pdf_letter_has_an_exact_cross_reference_table() {
        let bytes = pdf(
            "Solicitud (copia)",
            &["Año 2026: reforma de cocina y baño en C/ Mayor 12."],
            "Demostración",
        );
        assert!(bytes.starts_with(b"%PDF-1.4\n"));
        assert!(bytes.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&bytes);
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes[startxref..].starts_with(b"xref\n0 7\n"));
        // Every entry points at its object's header.
        let entries = &text[text.find("xref\n0 7\n").unwrap() + 9..];
        for (n, entry) in entries.lines().skip(1).take(6).enumerate() {
            let offset: usize = entry[..10].parse().unwrap();
            assert!(
                bytes[offset..].starts_with(format!("{} 0 obj\n", n + 1).as_bytes()),
                "object {}",
                n + 1
            );
        }
        // The content stream's length is its real length.
        let stream_at = find(&bytes, b"stream\n").unwrap() + 7;
        let stream_end = find(&bytes, b"\nendstream").unwrap();
        assert!(text.contains(&format!("/Length {}", stream_end - stream_at)));
    }

    #[test]
    fn pdf_text_is_winansi_with_accents_kept_and_parentheses_escaped() {
        let bytes = pdf("Título (1)", &["Ñandú € — ok"], "");
        assert!(find(&bytes, b"T\xedtulo \\(1\\)").is_some());
        assert!(find(&bytes, b"\xd1and\xfa \x80 \x97 ok").is_some());
        assert_eq!(pdf_text("中"), "?");
    }

    #[test]
    fn long_paragraphs_wrap_at_spaces() {
        let lines = wrap("uno dos tres cuatro cinco", 9);
        assert_eq!(lines, ["uno dos", "tres", "cuatro", "cinco"]);
        assert_eq!(wrap("", 9), Vec::<String>::new());
    }

    #[test]
    fn checksums_match_known_values() {
        // CRC-32 of "IEND" is the last four bytes of every PNG.
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn the_floor_plan_is_a_well_formed_png() {
        let bytes = floor_plan_png();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
        // Walk the chunks, checking each CRC.
        let mut at = 8;
        let mut kinds = Vec::new();
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let body = &bytes[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32(body), crc);
            kinds.push(String::from_utf8_lossy(&body[..4]).into_owned());
            at += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "PLTE", "IDAT", "IEND"]);
        // The image data holds one filter byte and 80 bytes per row.
        let idat = find(&bytes, b"IDAT").unwrap();
        let len = u32::from_be_bytes(bytes[idat - 4..idat].try_into().unwrap()) as usize;
        let stream = &bytes[idat + 4..idat + 4 + len];
        let stored = &stream[2..stream.len() - 4];
        assert_eq!(stored[0], 1, "one final stored block");
        assert_eq!(u16::from_le_bytes([stored[1], stored[2]]), 81 * 200);
        assert_eq!(
            u32::from_be_bytes(stream[stream.len() - 4..].try_into().unwrap()),
            adler32(&stored[5..])
        );
    }

    #[test]
    fn the_same_document_always_has_the_same_bytes() {
        let content = Content::Pdf {
            title: "T",
            paragraphs: &["p"],
        };
        assert_eq!(generate(&content, "f"), generate(&content, "f"));
        assert_eq!(generate(&Content::FloorPlan, "f").media_type, "image/png");
    }
}
