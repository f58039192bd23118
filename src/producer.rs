//! The producer's enqueue path: one deadline for the whole call, transient failures retried
//! inside it with the same job ids, and an honest account of what may have happened when the
//! deadline runs out.
//!
//! Job ids are made once, before the first attempt, and the enqueue script never writes a job
//! whose id already has a record, so resending a batch whose reply was lost cannot create a job
//! twice. That is what lets this loop retry after an ambiguous failure (a dropped connection,
//! a response timeout), and what lets a caller retry after a `BrokerError` with the same ids.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use redis::{ErrorKind, RetryMethod};

use crate::backoff::Redial;
use crate::batcher::Batcher;
use crate::broker::{Enqueued, NewJob};
use crate::errors::{broker_error, Error, Result};

/// Longest caller-supplied job id, in bytes.
pub const MAX_JOB_ID: usize = 128;

/// Check a caller-supplied job id: 1 to [`MAX_JOB_ID`] ASCII letters, digits, `-`, `_`, `.`
/// or `:` (ids become part of Redis keys and log lines; braces would move cluster slots).
pub fn check_job_id(id: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if !id.is_empty() && id.len() <= MAX_JOB_ID && id.chars().all(ok_char) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "job_id {id:?} is not valid: use 1 to {MAX_JOB_ID} ASCII letters, digits, '-', '_', '.' or ':'"
    )))
}

/// How one failed attempt bears on the outcome of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing reached Redis (connection refused, server still loading): try again.
    NotSent,
    /// The request may have run: try again (the same ids make that safe).
    Unknown,
    /// Retrying cannot help; true when the request may have run.
    Fatal(bool),
}

/// Classify a failure; `sending` says whether the jobs had been handed to a connection.
fn verdict(err: &Error, sending: bool) -> Verdict {
    match err {
        Error::Redis(e) if e.is_connection_refusal() => Verdict::NotSent,
        Error::Redis(e) => match e.kind() {
            ErrorKind::Server(_) => match e.retry_method() {
                // LOADING, TRYAGAIN, MASTERDOWN, READONLY: the server refused before running it.
                RetryMethod::WaitAndRetry | RetryMethod::RefreshSlotsAndRetry => Verdict::NotSent,
                _ => Verdict::Fatal(false),
            },
            ErrorKind::Io if sending => Verdict::Unknown,
            ErrorKind::Io => Verdict::NotSent,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Verdict::Fatal(sending),
            _ => Verdict::Fatal(false), // wrong password, bad configuration, client errors
        },
        // A reply came back that breaks the script's contract: the script ran.
        Error::Protocol { .. } => Verdict::Fatal(true),
        // The jobs were written; only their copy on replicas is in doubt. A resend would find
        // them present and write nothing, so its WAIT would prove nothing: the caller decides.
        Error::NotReplicated { .. } => Verdict::Fatal(true),
        _ => Verdict::Fatal(false),
    }
}

/// What happened so far in one enqueue call.
#[derive(Debug, Default)]
struct Progress {
    /// Some finished attempt may have reached the broker.
    unknown: bool,
    /// The attempt now running has handed its jobs to the connection.
    sending: bool,
    /// The last finished attempt never reached the broker: it is known to be down.
    down: bool,
    last: Option<Error>,
}

/// Why an enqueue call failed, with what its caller needs to retry safely.
#[derive(Debug)]
pub struct Failure {
    queue: String,
    /// The deadline that ran out, if that is why.
    timed_out: Option<Duration>,
    /// The last error seen (None: the deadline hit the first attempt before it answered).
    error: Option<Error>,
    /// The request may have reached the broker and written (some of) the jobs.
    pub outcome_unknown: bool,
    pub job_ids: Vec<String>,
}

impl Failure {
    fn message(&self) -> String {
        let n = self.job_ids.len();
        let what = match self.timed_out {
            Some(t) => format!(
                "enqueue of {n} job(s) to queue {:?} timed out after {}s",
                self.queue,
                t.as_secs_f64()
            ),
            None => format!("enqueue of {n} job(s) to queue {:?} failed", self.queue),
        };
        let last = self
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(" ({e})"));
        let consequence = if self.outcome_unknown {
            "the request may have reached Redis; retrying with the same job id is safe"
        } else {
            "nothing reached Redis; retrying is safe"
        };
        format!("{what}{last}: {consequence}")
    }

    /// The Python exception: `BrokerError` with `outcome_unknown` and `job_ids` for broker
    /// failures; other errors (a bad URL, say) keep their usual exception type.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let broker_side = matches!(
            self.error,
            None | Some(
                Error::Redis(_)
                    | Error::Protocol { .. }
                    | Error::Closed
                    | Error::Unavailable(_)
                    | Error::NotReplicated { .. }
            )
        );
        if self.timed_out.is_none() && !broker_side {
            return self.error.map_or_else(|| unreachable!(), PyErr::from);
        }
        let msg = self.message();
        broker_error(py, msg, self.outcome_unknown, self.job_ids)
    }
}

/// The outcome of an enqueue call as it crosses into Python: `[(id, created), ...]` or the
/// failure, turned into an exception under the GIL (where its attributes can be set).
pub struct Reply(pub std::result::Result<Vec<Enqueued>, Failure>);

impl<'py> IntoPyObject<'py> for Reply {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Ok(done) => done
                .into_iter()
                .map(|e| (e.id, e.created))
                .collect::<Vec<_>>()
                .into_pyobject(py),
            Err(failure) => Err(failure.into_pyerr(py)),
        }
    }
}

/// Enqueue `jobs` through the batcher `connect` yields, retrying transient failures with the
/// same ids until `timeout` (None: no limit). `fresh_ids`: the ids were generated for this call,
/// so finding one already written means an earlier attempt of this call wrote it.
pub async fn enqueue<F, Fut>(
    connect: F,
    queue: &str,
    jobs: Vec<NewJob>,
    timeout: Option<Duration>,
    fresh_ids: bool,
) -> std::result::Result<Vec<Enqueued>, Failure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Batcher>>,
{
    let mut p = Progress::default();
    let work = attempts(&connect, queue, &jobs, &mut p);
    let res = match timeout {
        None => work.await.map_err(Some),
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(res) => res.map_err(Some),
            Err(_) => Err(None),
        },
    };
    match res {
        Ok(mut done) => {
            if p.unknown && fresh_ids {
                mark_created(&mut done, &jobs);
            }
            Ok(done)
        }
        Err(fatal) => {
            // Cut off mid-attempt: unless the broker was known to be down when the attempt
            // began (then it is still dialling), the script may be running right now.
            // NOTE: the window where that guess is wrong is Redis coming back during the last
            // attempt and the reply taking longer than the rest of the deadline: about one RTT.
            if fatal.is_none() && p.sending && !p.down {
                p.unknown = true;
            }
            Err(Failure {
                queue: queue.to_owned(),
                timed_out: if fatal.is_none() { timeout } else { None },
                error: fatal.or(p.last),
                outcome_unknown: p.unknown,
                job_ids: jobs.into_iter().map(|j| j.id).collect(),
            })
        }
    }
}

/// An id this call generated that is found already written was written by an earlier attempt
/// of this same call: report it as created.
fn mark_created(done: &mut [Enqueued], jobs: &[NewJob]) {
    for (e, job) in done.iter_mut().zip(jobs) {
        if !e.created && e.id == job.id {
            e.created = true;
        }
    }
}

/// Attempt until success or a failure retrying cannot fix; `p` records what happened.
async fn attempts<F, Fut>(
    connect: &F,
    queue: &str,
    jobs: &[NewJob],
    p: &mut Progress,
) -> Result<Vec<Enqueued>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Batcher>>,
{
    let mut pause = Redial::new();
    loop {
        p.sending = false;
        let res = match connect().await {
            Ok(batcher) => {
                p.sending = true;
                // NOTE: a clone per attempt keeps the jobs for a retry; it is a copy of the
                // encoded payloads, small next to encoding them and the round trip.
                batcher.enqueue(queue.to_owned(), jobs.to_vec()).await
            }
            Err(e) => Err(e),
        };
        let err = match res {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        match verdict(&err, p.sending) {
            Verdict::Fatal(unknown) => {
                p.unknown |= unknown;
                return Err(err);
            }
            Verdict::Unknown => {
                p.unknown = true;
                p.down = false;
            }
            Verdict::NotSent => p.down = true,
        }
        p.sending = false;
        p.last = Some(err);
        tokio::time::sleep(pause.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::Redis(std::io::Error::from(kind).into())
    }

    #[test]
    fn refused_connections_never_reached_redis() {
        let refused = io(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(verdict(&refused, false), Verdict::NotSent);
        assert_eq!(verdict(&refused, true), Verdict::NotSent);
    }

    #[test]
    fn io_failures_after_sending_leave_the_outcome_unknown() {
        let reset = io(std::io::ErrorKind::ConnectionReset);
        assert_eq!(verdict(&reset, true), Verdict::Unknown);
        assert_eq!(verdict(&reset, false), Verdict::NotSent);
        assert_eq!(
            verdict(&io(std::io::ErrorKind::TimedOut), true),
            Verdict::Unknown
        );
    }

    #[test]
    fn other_errors_are_final() {
        let protocol = Error::Protocol {
            script: "enqueue",
            detail: "x".into(),
        };
        assert_eq!(verdict(&protocol, true), Verdict::Fatal(true));
        let payload = Error::Payload("bad".into());
        assert_eq!(verdict(&payload, true), Verdict::Fatal(false));
    }

    #[test]
    fn job_ids_are_checked() {
        assert!(check_job_id("order-17:v2").is_ok());
        assert!(check_job_id(&"a".repeat(MAX_JOB_ID)).is_ok());
        for bad in ["", "a b", "{q}", "é", &"a".repeat(MAX_JOB_ID + 1)] {
            assert!(check_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_written_by_an_earlier_attempt_count_as_created() {
        use crate::batcher::tests::job;
        let jobs = vec![job("a"), job("b")];
        let mut done = vec![
            Enqueued {
                id: "a".into(),
                created: false,
            },
            Enqueued {
                id: "other".into(),
                created: false,
            },
        ];
        mark_created(&mut done, &jobs);
        assert!(done[0].created);
        assert!(!done[1].created, "an idempotency key matched another job");
    }
}
