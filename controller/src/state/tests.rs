use dabba_spec::kv::{KvError, Outcome, Write};
use dabba_spec::resources::{AppSpec, Capacity, HostInfo, PodPhase, Role, Route};
use dabba_spec::{Digest, LimitOverrides};

use super::*;
use crate::command::PodChange;

pub(crate) fn digest(n: u8) -> Digest {
    Digest::from_bytes([n; 32])
}

pub(crate) fn spec(name: &str, prefix: &str, replicas: u32) -> AppSpec {
    AppSpec {
        name: name.into(),
        namespace: "default".into(),
        component: digest(1),
        route: Route {
            prefix: prefix.into(),
            host: None,
        },
        replicas,
        limits: LimitOverrides::default(),
        capabilities: Default::default(),
        node_selector: Default::default(),
        scale: None,
        rollout: None,
        analysis: Vec::new(),
        regions: None,
        rate_limit: None,
    }
}

pub(crate) fn with_blobs() -> State {
    let mut s = State::default();
    for n in 1..=3 {
        s.apply(&Command::PutBlob {
            digest: digest(n),
            size: 4,
            at: 0,
            bytes: None,
        });
    }
    s
}

fn app_reply(r: Reply) -> App {
    match r {
        Reply::App { app } => *app,
        other => panic!("expected an app, got {other:?}"),
    }
}

#[test]
fn init_happens_once() {
    let mut s = State::default();
    let grant = Grant {
        role: Role::Admin,
        namespace: None,
        label: "admin".into(),
        host: None,
        expires: None,
    };
    let init = Command::Init {
        tokens: vec![("h".into(), grant)],
    };
    assert_eq!(s.apply(&init), Reply::Ok);
    assert!(s.initialized);
    let again = s.apply(&init);
    assert!(matches!(
        again,
        Reply::Rejected {
            code: Rejection::AlreadyInitialized,
            ..
        }
    ));
}

#[test]
fn applying_a_changed_spec_makes_a_new_revision_but_scaling_does_not() {
    let mut s = with_blobs();
    let a = app_reply(s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 2)),
        at: 1,
    }));
    assert_eq!(a.revision, 1);
    // Same spec, other replica count: same revision, replica set follows.
    let a = app_reply(s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 5)),
        at: 2,
    }));
    assert_eq!(a.revision, 1);
    assert_eq!(
        s.replica_sets[&replica_set_key("default", "pay", 1)].replicas,
        5
    );
    // A new component: revision 2 takes the replicas, revision 1 goes to zero.
    let mut changed = spec("pay", "/pay", 5);
    changed.component = digest(2);
    let a = app_reply(s.apply(&Command::ApplyApp {
        spec: Box::new(changed),
        at: 3,
    }));
    assert_eq!(a.revision, 2);
    assert_eq!(a.created_at, 1);
    assert_eq!(
        s.replica_sets[&replica_set_key("default", "pay", 1)].replicas,
        0
    );
    assert_eq!(
        s.replica_sets[&replica_set_key("default", "pay", 2)].replicas,
        5
    );
    assert_eq!(s.revisions["default/pay"].len(), 2);
    let a = app_reply(s.apply(&Command::ScaleApp {
        namespace: "default".into(),
        name: "pay".into(),
        replicas: 1,
        at: 4,
        reason: None,
    }));
    assert_eq!((a.revision, a.spec.replicas), (2, 1));
    assert_eq!(
        s.replica_sets[&replica_set_key("default", "pay", 2)].replicas,
        1
    );
}

#[test]
fn revision_history_is_bounded() {
    let mut s = with_blobs();
    for i in 0..25u32 {
        let mut sp = spec("pay", "/pay", 1);
        sp.capabilities.env.insert("N".into(), i.to_string());
        s.apply(&Command::ApplyApp {
            spec: Box::new(sp),
            at: u64::from(i),
        });
    }
    let revs = &s.revisions["default/pay"];
    assert_eq!(revs.len(), REVISION_HISTORY);
    assert_eq!(revs.last().unwrap().number, 25);
    assert_eq!(revs.first().unwrap().number, 16);
}

#[test]
fn rejected_applies_change_nothing() {
    let mut s = with_blobs();
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 1,
    });
    let before = s.clone();
    let conflict = s.apply(&Command::ApplyApp {
        spec: Box::new(spec("other", "/pay/", 1)),
        at: 2,
    });
    match conflict {
        Reply::Rejected { code, message } => {
            assert_eq!(code, Rejection::RouteConflict);
            assert!(message.contains("default/pay"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut missing = spec("ghost", "/ghost", 1);
    missing.component = digest(9);
    assert!(matches!(
        s.apply(&Command::ApplyApp {
            spec: Box::new(missing),
            at: 3
        }),
        Reply::Rejected {
            code: Rejection::MissingComponent,
            ..
        }
    ));
    assert!(matches!(
        s.apply(&Command::DeleteApp {
            namespace: "default".into(),
            name: "nope".into(),
            at: 4
        }),
        Reply::Rejected {
            code: Rejection::NotFound,
            ..
        }
    ));
    assert_eq!(s, before);
}

#[test]
fn deleting_an_app_removes_its_pods_and_revisions() {
    let mut s = with_blobs();
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 1,
    });
    let pod = Pod {
        name: "pay-r1-1".into(),
        namespace: "default".into(),
        app: "pay".into(),
        revision: 1,
        host: None,
        phase: PodPhase::Pending,
        reason: None,
        created_at: 1,
        region: None,
        phase_since: 1,
        restarts: 0,
        backoff: 0,
    };
    s.apply(&Command::Pods {
        changes: vec![PodChange::Create { pod }],
        at: 1,
    });
    assert_eq!(s.pods.len(), 1);
    assert_eq!(
        s.apply(&Command::DeleteApp {
            namespace: "default".into(),
            name: "pay".into(),
            at: 2
        }),
        Reply::Ok
    );
    assert!(
        s.pods.is_empty()
            && s.revisions.is_empty()
            && s.replica_sets.is_empty()
            && s.apps.is_empty()
    );
}

#[test]
fn pod_changes_for_vanished_pods_are_ignored() {
    let mut s = with_blobs();
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 1,
    });
    let v = s.version;
    s.apply(&Command::Pods {
        changes: vec![
            PodChange::Place {
                key: ResourceKey::new("default", "ghost"),
                host: Some("h1".into()),
                reason: None,
            },
            PodChange::Delete {
                key: ResourceKey::new("default", "ghost"),
            },
        ],
        at: 2,
    });
    assert_eq!(s.version, v, "nothing visible changed");
    // A pod of a revision without a replica set is not created.
    let stray = Pod {
        name: "pay-r7-1".into(),
        namespace: "default".into(),
        app: "pay".into(),
        revision: 7,
        host: None,
        phase: PodPhase::Pending,
        reason: None,
        created_at: 1,
        region: None,
        phase_since: 1,
        restarts: 0,
        backoff: 0,
    };
    s.apply(&Command::Pods {
        changes: vec![PodChange::Create { pod: stray }],
        at: 3,
    });
    assert!(s.pods.is_empty());
}

#[test]
fn hosts_register_and_change_state() {
    let mut s = State::default();
    let info = HostInfo {
        name: "h1".into(),
        address: "http://127.0.0.1:1".into(),
        region: "r".into(),
        zone: "z".into(),
        labels: Default::default(),
        capacity: Capacity {
            memory: 1 << 30,
            instances: 100,
        },
    };
    s.apply(&Command::RegisterHost {
        info,
        at: 1,
        credential: None,
    });
    assert_eq!(s.hosts["h1"].state, HostState::Ready);
    s.apply(&Command::SetHostState {
        name: "h1".into(),
        state: HostState::NotReady,
        at: 5,
    });
    assert_eq!(
        (s.hosts["h1"].state, s.hosts["h1"].since),
        (HostState::NotReady, 5)
    );
}

#[test]
fn key_value_writes_apply_the_shared_semantics() {
    let mut s = State::default();
    let mut kv = MemoryWorkload::default();
    let inc = Command::Kv {
        bucket: "default/default".into(),
        write: Write::Increment {
            key: "n".into(),
            delta: 2,
        },
        id: None,
        fence: None,
    };
    assert_eq!(
        s.apply_with(&inc, &mut kv),
        Reply::Kv {
            result: Ok(Outcome::Counter(2))
        }
    );
    assert_eq!(
        s.apply_with(&inc, &mut kv),
        Reply::Kv {
            result: Ok(Outcome::Counter(4))
        }
    );
    let swap = Command::Kv {
        bucket: "default/default".into(),
        write: Write::Swap {
            key: "claim".into(),
            expected: None,
            value: b"a".to_vec(),
        },
        id: None,
        fence: None,
    };
    assert_eq!(
        s.apply_with(&swap, &mut kv),
        Reply::Kv {
            result: Ok(Outcome::Swapped)
        }
    );
    assert_eq!(
        s.apply_with(&swap, &mut kv),
        Reply::Kv {
            result: Ok(Outcome::Conflict(Some(b"a".to_vec())))
        }
    );
}

#[test]
fn state_round_trips_through_json_for_snapshots() {
    let mut s = with_blobs();
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 2)),
        at: 1,
    });
    let json = serde_json::to_vec(&s).unwrap();
    let back: State = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn applying_the_same_log_gives_the_same_state() {
    let log = [
        Command::PutBlob {
            digest: digest(1),
            size: 1,
            at: 0,
            bytes: None,
        },
        Command::ApplyApp {
            spec: Box::new(spec("a", "/a", 2)),
            at: 10,
        },
        Command::ApplyApp {
            spec: Box::new(spec("b", "/a", 1)),
            at: 11,
        },
        Command::ScaleApp {
            namespace: "default".into(),
            name: "a".into(),
            replicas: 3,
            at: 12,
            reason: None,
        },
        Command::Kv {
            bucket: "x".into(),
            write: Write::Increment {
                key: "n".into(),
                delta: 1,
            },
            id: Some("w1".into()),
            fence: None,
        },
    ];
    let run = || {
        let mut s = State::default();
        let mut kv = MemoryWorkload::default();
        let replies: Vec<Reply> = log.iter().map(|c| s.apply_with(c, &mut kv)).collect();
        (s, kv, replies)
    };
    assert_eq!(run(), run());
}

#[test]
fn an_identified_write_is_applied_once_however_often_it_is_retried() {
    let mut s = State::default();
    let mut kv = MemoryWorkload::default();
    let inc = |id: &str| Command::Kv {
        bucket: "b".into(),
        write: Write::Increment {
            key: "n".into(),
            delta: 5,
        },
        id: Some(id.into()),
        fence: None,
    };
    let counter = |r: Reply| match r {
        Reply::Kv {
            result: Ok(Outcome::Counter(n)),
        } => n,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(counter(s.apply_with(&inc("a"), &mut kv)), 5);
    assert_eq!(
        counter(s.apply_with(&inc("a"), &mut kv)),
        5,
        "the retry gets the first answer"
    );
    assert_eq!(
        counter(s.apply_with(&inc("b"), &mut kv)),
        10,
        "another write applies"
    );
    assert_eq!(kv.buckets["b"]["n"], b"10".to_vec());
    // The remembering is bounded: the oldest id is forgotten first.
    for i in 0..KV_WRITE_MEMORY {
        s.apply_with(&inc(&format!("filler-{i}")), &mut kv);
    }
    assert_eq!(kv.remembered.len(), KV_WRITE_MEMORY);
    assert!(!kv.remembered.contains_key("a") && !kv.remembered.contains_key("b"));
    assert!(kv.remembered.contains_key("filler-0"));
}

#[test]
fn a_batch_applies_its_commands_in_order_with_one_reply_each() {
    let mut s = State::default();
    let mut kv = MemoryWorkload::default();
    let inc = |delta| Command::Kv {
        bucket: "b".into(),
        write: Write::Increment {
            key: "n".into(),
            delta,
        },
        id: None,
        fence: None,
    };
    let batch = Command::Batch {
        commands: vec![
            inc(1),
            inc(10),
            Command::DeleteApp {
                namespace: "default".into(),
                name: "nope".into(),
                at: 1,
            },
        ],
    };
    match s.apply_with(&batch, &mut kv) {
        Reply::Batch { replies } => {
            assert_eq!(replies.len(), 3);
            assert_eq!(
                replies[0],
                Reply::Kv {
                    result: Ok(Outcome::Counter(1))
                }
            );
            assert_eq!(
                replies[1],
                Reply::Kv {
                    result: Ok(Outcome::Counter(11))
                }
            );
            assert!(
                matches!(replies[2], Reply::Rejected { .. }),
                "{:?}",
                replies[2]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A cron job attempt's write is applied only while that attempt is the run's attempt
/// running now: not before it is placed, not once it failed over to the next attempt,
/// not after the run ended or is gone. A refused write changes nothing.
#[test]
fn a_fenced_write_applies_only_while_its_attempt_runs() {
    use crate::command::CronChange;
    use dabba_spec::cronjob::{Fence, JobRun, RunReport};

    let mut s = State {
        cron: crate::reconcile::cron::tests::with_job(
            "name = \"settle\"\nschedule = \"0 1 * * *\"\nbackoff_limit = 2\n",
            0,
        ),
        ..State::default()
    };
    let mut kv = MemoryWorkload::default();
    let run = JobRun::pending("default", "settle", "settle-1".into(), 10, 10);
    let key = run.key();
    s.cron.runs.insert(key.clone(), run);
    let write = |attempt| Command::Kv {
        bucket: "default/ledger".into(),
        write: Write::Increment {
            key: "n".into(),
            delta: 1,
        },
        id: None,
        fence: Some(Fence {
            run: key.clone(),
            attempt,
        }),
    };
    let applied =
        |s: &mut State, kv: &mut MemoryWorkload, attempt| match s.apply_with(&write(attempt), kv) {
            Reply::Kv { result: Ok(_) } => true,
            Reply::Kv {
                result: Err(KvError::Fenced { message }),
            } => {
                assert!(message.contains("default/settle-1"), "{message}");
                false
            }
            other => panic!("{other:?}"),
        };
    let change = |s: &mut State, c: CronChange| assert!(s.cron.apply(&c, 20));

    assert!(!applied(&mut s, &mut kv, 1), "pending: not running yet");
    change(
        &mut s,
        CronChange::Place {
            run: key.clone(),
            host: "h1".into(),
        },
    );
    assert!(applied(&mut s, &mut kv, 1));
    assert!(!applied(&mut s, &mut kv, 2), "no such attempt yet");
    change(
        &mut s,
        CronChange::AttemptFailed {
            run: key.clone(),
            reason: "host h1 was lost".into(),
        },
    );
    change(
        &mut s,
        CronChange::Place {
            run: key.clone(),
            host: "h2".into(),
        },
    );
    assert!(!applied(&mut s, &mut kv, 1), "the zombie attempt");
    assert!(applied(&mut s, &mut kv, 2));
    let report = RunReport {
        attempt: 2,
        exit_code: 0,
        fuel: None,
        duration_ms: 5,
        reason: None,
        output: String::new(),
    };
    change(
        &mut s,
        CronChange::Report {
            run: key.clone(),
            report,
        },
    );
    assert!(!applied(&mut s, &mut kv, 2), "the run has ended");
    s.cron.runs.clear();
    assert!(!applied(&mut s, &mut kv, 2), "the run is gone");
    assert_eq!(
        workload_kv::Workload::read(&kv, "default/ledger", "n").unwrap(),
        Some(b"2".to_vec()),
        "only the two writes of running attempts"
    );
}

/// A host registered with the join token gets a credential of its own; its name is not
/// registered so again while it is Ready (the join token cannot take a live host's
/// name), and once it is NotReady the new credential replaces the old one.
#[test]
fn a_host_credential_is_issued_once_per_life_of_the_host() {
    let mut s = State::default();
    let info = crate::reconcile::tests::host("h1", "z", 1 << 30, &[]);
    let Command::RegisterHost { info, at, .. } = info else {
        unreachable!()
    };
    let register = |s: &mut State, hash: &str| {
        s.apply(&Command::RegisterHost {
            info: info.clone(),
            at,
            credential: Some(hash.into()),
        })
    };
    assert_eq!(register(&mut s, "first"), Reply::Ok);
    assert_eq!(s.tokens["first"].host.as_deref(), Some("h1"));
    assert_eq!(s.tokens["first"].role, Role::Host);
    match register(&mut s, "second") {
        Reply::Rejected { code, message } => {
            assert_eq!(code, Rejection::Conflict);
            assert!(message.contains("h1 is registered and Ready"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.tokens.contains_key("second"), "nothing changed");
    s.apply(&Command::SetHostState {
        name: "h1".into(),
        state: HostState::NotReady,
        at: 5,
    });
    assert_eq!(register(&mut s, "second"), Reply::Ok);
    assert!(
        !s.tokens.contains_key("first"),
        "the old credential is revoked"
    );
    assert_eq!(s.tokens["second"].host.as_deref(), Some("h1"));
    assert_eq!(s.hosts["h1"].state, HostState::Ready);
}

/// The cluster's last admin token that does not expire cannot be revoked (nobody could
/// administer the cluster again); any other can.
#[test]
fn the_last_lasting_admin_token_is_not_revoked() {
    let mut s = State::default();
    let grant = |role, expires| Grant {
        role,
        namespace: None,
        label: "t".into(),
        host: None,
        expires,
    };
    for (hash, g) in [
        ("admin", grant(Role::Admin, None)),
        ("brief-admin", grant(Role::Admin, Some(10))),
        ("viewer", grant(Role::Viewer, None)),
    ] {
        s.apply(&Command::CreateToken {
            hash: hash.into(),
            grant: g,
        });
    }
    let revoke = |s: &mut State, hash: &str| s.apply(&Command::RevokeToken { hash: hash.into() });
    assert!(matches!(
        revoke(&mut s, "admin"),
        Reply::Rejected {
            code: Rejection::Conflict,
            ..
        }
    ));
    assert_eq!(revoke(&mut s, "viewer"), Reply::Ok);
    assert_eq!(revoke(&mut s, "brief-admin"), Reply::Ok);
    s.apply(&Command::CreateToken {
        hash: "second-admin".into(),
        grant: grant(Role::Admin, None),
    });
    assert_eq!(revoke(&mut s, "admin"), Reply::Ok, "another admin remains");
    assert!(s.tokens.contains_key("second-admin"));
}
