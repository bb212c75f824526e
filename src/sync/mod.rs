//! The sync engines: the spec's whole step over a [`crate::Backend`] and a
//! [`crate::Collective`].
//!
//! - [`SyncGroup`] (`group`): a model's buckets on one backend and one
//!   collective; one vote and one exchange per step for all of them.
//! - [`SparseSync`] (`single`): one vector, a group of one bucket.
//! - `bucket`: one bucket's device state, counters and scratch.
//! - `budget`: one bucket's threshold controller (budget mode).
//! - `vote`: the vote's layout and the failure codes ranks exchange in it.
//! - `checkpoint`: saving and restoring an engine's whole state.
//! - [`StepReport`], [`GroupReport`] (`report`): what a step did.

mod bucket;
mod budget;
mod checkpoint;
mod group;
mod report;
mod single;
mod vote;

pub use group::{BucketStep, SyncGroup};
pub use report::{GroupReport, StepReport};
pub use single::SparseSync;
