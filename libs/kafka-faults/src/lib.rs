//! Test-only fault injection through librdkafka's own test hooks.
//!
//! Some failures of a real Kafka client cannot be provoked from outside on a
//! healthy broker, such as the fatal error an idempotent producer raises when
//! it can no longer guarantee order and no duplicates. librdkafka provides
//! `rd_kafka_test_fatal_error` for exactly that: it raises the same fatal
//! error on a real client talking to a real broker. Only tests depend on this
//! crate.

use std::ffi::CString;

use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaRespErr;

/// Raises a fatal error on `client` as librdkafka would after an
/// unrecoverable idempotence failure (`OUT_OF_ORDER_SEQUENCE_NUMBER`): from
/// then on the client fails every produce, and `Client::fatal_error` reports
/// it.
pub fn raise_fatal_error<C: ClientContext>(client: &Client<C>, reason: &str) {
    let reason = CString::new(reason).expect("a reason without NUL bytes");
    // SAFETY: the pointer comes from a live client borrowed for the whole
    // call, and `reason` outlives it; librdkafka copies the string.
    let result = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            client.native_ptr(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    assert_eq!(
        result,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        "librdkafka refused to raise the fatal error"
    );
}
