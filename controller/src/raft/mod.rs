//! Consensus: openraft wired to dabba's commands, durable storage and HTTP transport.
//!
//! - [`log_store`]: the Raft log, vote and commit index in a redb file, fsync'd before
//!   openraft is told an append or a vote is done.
//! - [`state_machine`]: applies committed [`Command`]s to the [`State`](crate::state::State)
//!   in memory and to the [`workload`] store on disk; snapshots are files written
//!   atomically and streamed, so a restart reads the last snapshot's header and replays
//!   only the log after it.
//! - [`workload`]: the workload key-value buckets, a redb file per controller.
//! - [`network`]: Raft RPCs between controllers over HTTP (JSON; snapshot chunks raw).

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod workload;

use crate::command::{Command, Reply};

openraft::declare_raft_types!(
    /// The Raft types of a dabba controller cluster.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use super::{StorageError, TypeConfig};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let log = LogStore::open(&dir.path().join("raft.redb"))?;
            let blobs =
                crate::blobs::BlobStore::open(&dir.path().join("blobs")).expect("a blob store");
            let sm = StateMachine::open(
                &dir.path().join("snapshots"),
                &dir.path().join("workload.redb"),
                super::workload::DEFAULT_CACHE,
                blobs.into(),
            )?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log and state-machine storage.
    #[test]
    fn storage_passes_openraft_conformance_suite() {
        Suite::test_all(Builder).expect("the storage conforms");
    }
}
