//! Thin `#[pyclass(frozen)]` wrappers: conversion at the edges, no business logic.

pub mod broker;
pub mod consumer;
pub mod events;
pub mod info;
pub mod metrics;
