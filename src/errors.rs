//! One error enum for the crate and its single mapping into Python exceptions.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{create_exception, PyErr};

// Module `asyncq`, where users import them from: `__module__` reads right and pickling finds
// the classes (they are re-exported there).
create_exception!(
    asyncq,
    AsyncqError,
    pyo3::exceptions::PyException,
    "Base class of asyncq errors."
);
create_exception!(
    asyncq,
    BrokerError,
    AsyncqError,
    "The broker (Redis) failed or could not be reached.\n\nAttributes:\n    outcome_unknown: For an enqueue: True when the request may have reached Redis (the jobs may\n        exist); False when nothing was written.\n    job_ids: For an enqueue: the ids of the jobs it was about; resending them with the same\n        ids (``Task.options(job_id=...)``) is safe.\n"
);
create_exception!(
    asyncq,
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
    /// A part of the broker connection is not up right now (callers that can fall back do).
    #[error("{0}")]
    Unavailable(String),
    /// An argument the caller passed is not acceptable (raised as `ValueError`).
    #[error("{0}")]
    Invalid(String),
    /// The primary ran the write, but fewer replicas than asked confirmed it in time: it exists,
    /// and a failover now may lose it.
    #[error("the primary wrote it, but {acked} of {wanted} replica(s) confirmed it within {timeout_ms} ms (WAIT); a failover before they do may lose it")]
    NotReplicated {
        acked: i64,
        wanted: u32,
        timeout_ms: u64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// True when the broker answered, but a script (or a command in it) failed or broke its
    /// contract: a Lua runtime error, a wrong-type key, an unexpected reply. Such an error is
    /// about data or code, not connectivity, so it is never reported as the broker being down.
    pub fn is_script_error(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            Error::Protocol { .. } => true,
            Error::Redis(e) => {
                matches!(
                    e.kind(),
                    ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::ExecAbort)
                ) || e.code() == Some("WRONGTYPE")
            }
            _ => false,
        }
    }
}

/// Give `BrokerError` its class-level attribute defaults (what an error raised outside enqueue
/// carries); enqueue failures set per-instance values with [`broker_error`].
pub fn init_broker_error(py: Python<'_>) -> PyResult<()> {
    let cls = py.get_type::<BrokerError>();
    cls.setattr("outcome_unknown", false)?;
    cls.setattr("job_ids", PyList::empty(py))?;
    Ok(())
}

/// A `BrokerError` carrying what an enqueue caller needs to retry safely: whether the request
/// may have reached the broker, and the ids of the jobs it was about.
pub fn broker_error(
    py: Python<'_>,
    msg: String,
    outcome_unknown: bool,
    job_ids: Vec<String>,
) -> PyErr {
    let err = BrokerError::new_err(msg);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion.
    let _ = value.setattr("outcome_unknown", outcome_unknown);
    let _ = value.setattr("job_ids", job_ids);
    err
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::BadUrl(_) | Error::Invalid(_) => PyValueError::new_err(msg),
            Error::Unserializable { .. } => PyTypeError::new_err(msg),
            Error::Payload(_) | Error::Oversized { .. } => PayloadError::new_err(msg),
            Error::Redis(_)
            | Error::Protocol { .. }
            | Error::Closed
            | Error::Unavailable(_)
            | Error::NotReplicated { .. } => BrokerError::new_err(msg),
        }
    }
}
