//! Group commit above Raft: concurrent proposals share one log entry (and one fsync),
//! and concurrent linearizable reads share one leadership check.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};

use super::{Controller, ProposeError};
use crate::command::{Command, Reply};
use crate::raft::Raft;

/// A command waiting to be proposed, and who waits for its reply.
pub(super) struct Proposal {
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<Reply, ProposeError>>,
}

/// Most commands in one batch entry.
const MAX_BATCH: usize = 512;
/// Batches in flight at once. openraft 0.9 flushes one leader append at a time, so a
/// few in flight keep the disk busy while the next batch fills.
const BATCHES_IN_FLIGHT: usize = 2;

impl Controller {
    /// Proposes a command on this node, which must be the leader, and waits until it is
    /// committed by a quorum and applied. Concurrent proposals are batched into one log
    /// entry.
    pub async fn propose(&self, command: Command) -> Result<Reply, ProposeError> {
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.proposals
            .send(Proposal { command, reply })
            .map_err(|_| ProposeError::Raft("the controller is shutting down".into()))?;
        wait.await
            .map_err(|_| ProposeError::Raft("the proposal was dropped".into()))?
    }

    /// Confirms this node still leads, so a read of its state sees every committed write.
    /// Concurrent reads share one confirmation (one round of heartbeats), started after
    /// they all arrived.
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.reads
            .send(done)
            .map_err(|_| ProposeError::Raft("the controller is shutting down".into()))?;
        wait.await
            .map_err(|_| ProposeError::Raft("the read was dropped".into()))?
    }
}

/// Holds proposals and leadership checks while the leader hands leadership over: both
/// would renew the followers' leader lease and keep the handoff from ever happening.
pub(super) type Gate = tokio::sync::watch::Receiver<bool>;

/// Waits while the gate is closed (at most `HELD_AT_MOST`, in case it is never opened).
async fn pass(gate: &mut Gate) {
    const HELD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(HELD_AT_MOST, gate.wait_for(|closed| !*closed)).await;
}

/// Writes one command (or a batch of them) through Raft.
async fn client_write(raft: &Raft, command: Command) -> Result<Reply, ProposeError> {
    match raft.client_write(command).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_node.map(|n| n.addr),
            })
        }
        Err(e) => Err(ProposeError::Raft(e.to_string())),
    }
}

/// Group commit above Raft: takes every proposal waiting, proposes them as one entry
/// (alone if there is only one), and hands each caller its own reply. At most
/// [`BATCHES_IN_FLIGHT`] entries are in flight, so under load proposals gather while the
/// previous entries are flushed and replicated, and one fsync serves many writes.
pub(super) fn spawn_batcher(
    raft: Raft,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
    mut gate: Gate,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            pass(&mut gate).await;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let raft = raft.clone();
            tokio::spawn(async move {
                if batch.len() == 1 {
                    let p = batch.pop().expect("one proposal");
                    let _ = p.reply.send(client_write(&raft, p.command).await);
                } else {
                    let (commands, replies): (Vec<Command>, Vec<_>) =
                        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
                    match client_write(&raft, Command::Batch { commands }).await {
                        Ok(Reply::Batch { replies: answers }) => {
                            for (tx, answer) in replies.into_iter().zip(answers) {
                                let _ = tx.send(Ok(answer));
                            }
                        }
                        Ok(other) => {
                            for tx in replies {
                                let _ = tx.send(Err(ProposeError::Raft(format!(
                                    "unexpected reply to a batch: {other:?}"
                                ))));
                            }
                        }
                        Err(e) => {
                            for tx in replies {
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                }
                drop(permit);
            });
        }
    });
}

/// Confirms leadership once for every read waiting when the confirmation starts.
pub(super) fn spawn_read_batcher(
    raft: Raft,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<
        tokio::sync::oneshot::Sender<Result<(), ProposeError>>,
    >,
    mut gate: Gate,
) {
    tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            pass(&mut gate).await;
            let mut waiting = vec![first];
            while let Ok(more) = inbox.try_recv() {
                waiting.push(more);
            }
            let result = match raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => Err(ProposeError::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                }),
                Err(e) => Err(ProposeError::Raft(e.to_string())),
            };
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    });
}
