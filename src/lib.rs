//! policywatch: watches news feeds for export-control and AI-chip policy stories.
//!
//! The path of a story, top to bottom: `fetch` (bytes from a URL, politely) → `feed` (bytes to
//! [`item::Item`]s) → `store` (dedup, persist) → `classify` (item to [`item::Verdict`]s) →
//! `store` (verdicts, outbox) → `digest` (render) → `notify` (log or mail). `daemon` drives the
//! loop; `config` is read once and compiled. See ARCHITECTURE.md.

pub mod backtest;
pub mod canon;
pub mod classify;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod diagnostic;
pub mod digest;
pub mod feed;
pub mod fetch;
pub mod item;
pub mod lang;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod opml;
pub mod retry;
pub mod schedule;
pub mod score;
pub mod service;
pub mod sets;
pub mod store;
pub mod text;
