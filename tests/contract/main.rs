//! The broker contract: every test is written once, as an async function of a [`harness::Ctx`],
//! and runs twice, as `<name>::memory` over a fresh `memory://` broker and as `<name>::redis`
//! over a private `redis-server` on a free loopback port (skipped without `redis-server`,
//! unless `CI` is set). Both brokers run the same Lua scripts, so a difference is a bug.
//!
//! Modules follow the job's life: `enqueue`, `outcomes` (ack, fail, release), `lease`
//! (heartbeat, reap), `admin` (cancel, dead letters, purge, listings, expiry), `wait`,
//! `corrupt` (records damaged behind the broker's back), `races` (the consumer engine against
//! a broker). `redis_only` holds what has no memory:// counterpart (connections, URLs, the
//! script cache); memory:// engine internals stay in `src/broker/memory/tests/`.

#[path = "../redis_support/mod.rs"]
mod redis_support;

mod harness;

mod admin;
mod corrupt;
mod ended;
mod engine;
mod enqueue;
mod events;
mod flow_control;
mod flows;
mod lease;
mod limits;
mod outcomes;
mod prefetch;
mod races;
mod redis_only;
mod schedules;
mod slots;
mod wait;
