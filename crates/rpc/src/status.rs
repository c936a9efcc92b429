//! Typed gRPC error statuses with rich details.
//!
//! Every typed refusal a City Chain server sends has two faces:
//! - the message starts with the reason: `"NONCE_REUSED: (sender, nonce) already used …"`
//!   (what humans and the older clients read);
//! - the status details are a `google.rpc.Status` carrying a `google.rpc.ErrorInfo`
//!   (reason = the same name, domain [`ERROR_DOMAIN`], metadata where useful, e.g. the tx
//!   id), which any gRPC client decodes with its standard error-details support (in Rust:
//!   [`error_info`], or `tonic_types::StatusExt`). Federation refusals add a second detail,
//!   the canonical bytes of the typed [`crate::FederationError`] ([`FEDERATION_ERROR_TYPE_URL`]).

use std::collections::HashMap;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The `ErrorInfo.domain` of every City Chain error.
pub const ERROR_DOMAIN: &str = "citychain.net";

/// Type URL of the federation detail: canonical bytes of [`crate::FederationError`].
pub const FEDERATION_ERROR_TYPE_URL: &str = "type.citychain.net/citychain.v1.FederationError";

const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// A typed status: message `"<reason>: <detail>"`, details with an `ErrorInfo` (reason,
/// [`ERROR_DOMAIN`], `metadata`) and then `extra`.
pub fn typed_status(
    code: Code,
    reason: &str,
    detail: impl std::fmt::Display,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
    extra: Option<prost_types::Any>,
) -> Status {
    let message = format!("{reason}: {detail}");
    let info = tonic_types::pb::ErrorInfo {
        reason: reason.to_string(),
        domain: ERROR_DOMAIN.to_string(),
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    };
    let mut details = vec![prost_types::Any {
        type_url: ERROR_INFO_TYPE_URL.to_string(),
        value: info.encode_to_vec(),
    }];
    details.extend(extra);
    let rpc_status = tonic_types::pb::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(
        code,
        message,
        tonic::codegen::Bytes::from(rpc_status.encode_to_vec()),
    )
}

/// A typed status without metadata: `typed_status(code, reason, detail, [], None)`.
pub fn typed(code: Code, reason: &str, detail: impl std::fmt::Display) -> Status {
    typed_status(code, reason, detail, [], None)
}

/// Adds the `ErrorInfo` to a status built elsewhere as `"<REASON>: <detail>"` (reason in
/// `[A-Z0-9_]`, at most 63 characters) and without details. Any other status is returned
/// unchanged.
pub fn with_error_info(s: Status) -> Status {
    if !s.details().is_empty() {
        return s;
    }
    match s.message().split_once(": ") {
        Some((reason, detail)) if is_reason(reason) => {
            typed_status(s.code(), reason, detail, [], None)
        }
        _ => s,
    }
}

fn is_reason(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The `ErrorInfo` a City Chain server put in `s`'s details, if any.
pub fn error_info(s: &Status) -> Option<tonic_types::ErrorInfo> {
    s.get_details_error_info()
        .filter(|i| i.domain == ERROR_DOMAIN)
}

/// The value of the detail of type `type_url` in `s`'s `google.rpc.Status` details.
pub(crate) fn detail_of(s: &Status, type_url: &str) -> Option<Vec<u8>> {
    let rpc = tonic_types::pb::Status::decode(s.details()).ok()?;
    rpc.details
        .into_iter()
        .find(|a| a.type_url == type_url)
        .map(|a| a.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_status_carries_the_prefix_and_the_error_info() {
        let s = typed_status(
            Code::AlreadyExists,
            "NONCE_REUSED",
            "nonce 7 already used",
            [("tx_id", "ab".repeat(32))],
            None,
        );
        assert_eq!(s.message(), "NONCE_REUSED: nonce 7 already used");
        let info = error_info(&s).expect("ErrorInfo in the details");
        assert_eq!(info.reason, "NONCE_REUSED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["tx_id"], "ab".repeat(32));
    }

    #[test]
    fn with_error_info_reads_the_prefix_and_leaves_other_statuses_alone() {
        let s = with_error_info(Status::not_found("NOT_HELD: stripe 1f shard 3"));
        assert_eq!(error_info(&s).unwrap().reason, "NOT_HELD");
        assert_eq!(s.message(), "NOT_HELD: stripe 1f shard 3");
        let plain = with_error_info(Status::resource_exhausted("frame too large"));
        assert!(plain.details().is_empty());
        assert!(error_info(&plain).is_none());
        let lower = with_error_info(Status::internal("oops: lower case"));
        assert!(error_info(&lower).is_none());
        let already = typed(Code::Internal, "STORE", "x");
        assert_eq!(
            with_error_info(already.clone()).details(),
            already.details()
        );
    }
}
