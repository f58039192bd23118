//! PLACEHOLDER: replaced by the real codec from branch wt-codec.
#![allow(unused)]
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde::{Deserialize, Serialize};

use crate::errors::Error;

pub const ENVELOPE_VERSION: u64 = 1;

pub struct Meta {
    pub timeout_s: Option<f64>,
}

pub struct Envelope<'a> {
    pub version: u64,
    pub task: &'a str,
    pub meta: Meta,
}

pub enum Poison {
    Bad(String),
}

impl Poison {
    pub fn reason(&self) -> &'static str {
        "bad_payload"
    }
    pub fn message(&self) -> String {
        String::new()
    }
}

pub fn encode_envelope(
    task: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    meta: &Meta,
    arg_names: &[String],
    max_size: usize,
) -> Result<Vec<u8>, Error> {
    unimplemented!()
}

pub fn parse_envelope(bytes: &[u8], max_size: usize) -> Result<Envelope<'_>, Poison> {
    unimplemented!()
}

pub fn decode_args<'py>(
    py: Python<'py>,
    env: &Envelope,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    unimplemented!()
}

pub fn encode_value(obj: &Bound<'_, PyAny>, path: &str) -> Result<Vec<u8>, Error> {
    unimplemented!()
}

pub fn decode_value<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    unimplemented!()
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct ErrorRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
    pub reason: String,
}

impl ErrorRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }
    pub fn from_bytes(b: &[u8]) -> Self {
        rmp_serde::from_slice(b).unwrap_or_default()
    }
}
