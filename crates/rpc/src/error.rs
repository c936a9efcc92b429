//! Errors of the rpc client.

use crate::Rejection;
use thiserror::Error;

/// Why a client call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The node rejected the tx; the rejection says why.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// Transport or server failure.
    #[error("gRPC status {code:?}: {message}")]
    Status {
        /// gRPC code.
        code: tonic::Code,
        /// Server's message.
        message: String,
    },
    /// Could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: String,
        /// Transport error.
        source: tonic::transport::Error,
    },
    /// The server answered with something that does not convert.
    #[error("malformed response: {0}")]
    Malformed(#[from] crate::ConvertError),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        match Rejection::from_status(&s) {
            Some(r) => ClientError::Rejected(r),
            None => ClientError::Status {
                code: s.code(),
                message: s.message().to_string(),
            },
        }
    }
}

/// Result with [`ClientError`].
pub type Result<T> = std::result::Result<T, ClientError>;

/// Opens a channel to `addr` (`http://host:port` or `host:port`), for every typed client.
pub(crate) async fn connect(addr: &str) -> Result<tonic::transport::Channel> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    tonic::transport::Channel::from_shared(url.clone())
        .map_err(|e| ClientError::Status {
            code: tonic::Code::InvalidArgument,
            message: format!("bad address {addr}: {e}"),
        })?
        .connect()
        .await
        .map_err(|source| ClientError::Connect { addr: url, source })
}
