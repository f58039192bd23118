//! One error enum for the crate and its single mapping into Python exceptions.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::{create_exception, PyErr};

create_exception!(
    _core,
    AsyncqError,
    pyo3::exceptions::PyException,
    "Base class of asyncq errors."
);
create_exception!(
    _core,
    BrokerError,
    AsyncqError,
    "The broker (Redis) failed or could not be reached."
);
create_exception!(
    _core,
    PayloadError,
    AsyncqError,
    "A payload could not be encoded or decoded."
);

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("bad broker URL: {0}")]
    BadUrl(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script returned something its contract does not allow.
    #[error("script {script} broke its contract: {detail}")]
    Protocol {
        script: &'static str,
        detail: String,
    },
    /// A value that the codec cannot represent.
    #[error("cannot serialize {path}: object of type '{type_name}' is not supported (use None, bool, int, float, str, bytes, list, tuple, dict, datetime, date, UUID or Decimal)")]
    Unserializable { path: String, type_name: String },
    #[error("payload: {0}")]
    Payload(String),
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("broker is closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::BadUrl(_) => PyValueError::new_err(msg),
            Error::Unserializable { .. } => PyTypeError::new_err(msg),
            Error::Payload(_) | Error::Oversized { .. } => PayloadError::new_err(msg),
            Error::Redis(_) | Error::Protocol { .. } | Error::Closed => BrokerError::new_err(msg),
        }
    }
}
