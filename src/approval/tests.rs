use super::*;

const TTL: Duration = Duration::from_secs(15 * 60);

fn asked(task: &str, method: &str, path: &str) -> Asked {
    Asked {
        task: task.into(),
        rule: "github-write[0]".into(),
        method: method.into(),
        path: path.into(),
    }
}

fn spec(approvers: u8, grant: Grant) -> ApprovalSpec {
    ApprovalSpec {
        approvers,
        hold: Duration::ZERO,
        grant,
    }
}

/// Checks `a` under `spec` at `now`; the approval's id when it is pending.
fn pending_id(store: &Approvals, a: &Asked, spec: ApprovalSpec, now: Instant) -> String {
    match store.check(a, spec, Context::default, now).0 {
        Check::Pending { approval, .. } => approval.id,
        other => panic!("not pending: {other:?}"),
    }
}

fn is_granted(store: &Approvals, a: &Asked, spec: ApprovalSpec, now: Instant) -> bool {
    matches!(
        store.check(a, spec, Context::default, now).0,
        Check::Granted(_)
    )
}

#[test]
fn grants_parse_and_narrow_never_widen() {
    assert_eq!(Grant::parse("request"), Ok(Grant::Request));
    assert_eq!(Grant::parse("task"), Ok(Grant::Task));
    assert_eq!(
        Grant::parse("10m"),
        Ok(Grant::For(Duration::from_secs(600)))
    );
    for bad in ["0s", "forever", "10", ""] {
        assert!(Grant::parse(bad).is_err(), "{bad}");
    }
    let ten = Grant::For(Duration::from_secs(600));
    let five = Grant::For(Duration::from_secs(300));
    assert!(Grant::Request.within(ten) && Grant::Request.within(Grant::Task));
    assert!(five.within(ten) && ten.within(Grant::Task));
    assert!(!ten.within(five) && !ten.within(Grant::Request) && !Grant::Task.within(ten));
    assert_eq!(ten.narrowest(Grant::Request), Grant::Request);
    assert_eq!(Grant::Task.narrowest(five), five);
    assert_eq!(ten.to_string(), "10m");
}

#[test]
fn a_request_grant_covers_that_request_once() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let merge = asked("t1", "PUT", "/repos/a/b/pulls/1/merge");
    let s = spec(1, Grant::Request);
    let id = pending_id(&store, &merge, s, now);
    assert!(id.starts_with("apr-") && id.len() == 36, "{id}");
    // Asked again while pending: the same approval, asked twice.
    assert_eq!(pending_id(&store, &merge, s, now), id);
    assert_eq!(store.get(&id).unwrap().asks, 2);
    let Ok(Change::Granted(granted)) = store.approve(&id, "approver-1", None, None, now) else {
        panic!("not granted");
    };
    assert_eq!(granted.approvers(), ["approver-1"]);
    assert_eq!(granted.grant, Some(Grant::Request));
    // Another path, method or task needs its own approval.
    for other in [
        asked("t1", "PUT", "/repos/a/b/pulls/2/merge"),
        asked("t1", "DELETE", "/repos/a/b/pulls/1/merge"),
        asked("t2", "PUT", "/repos/a/b/pulls/1/merge"),
    ] {
        assert_ne!(pending_id(&store, &other, s, now), id, "{other:?}");
    }
    assert!(is_granted(&store, &merge, s, now));
    // Used: the next identical request asks again.
    assert_ne!(pending_id(&store, &merge, s, now), id);
}

#[test]
fn a_timed_grant_covers_the_rule_until_it_runs_out() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::For(Duration::from_secs(600)));
    let id = pending_id(&store, &asked("t1", "POST", "/a"), s, now);
    store.approve(&id, "approver-1", None, None, now).unwrap();
    for at in [0, 1, 599] {
        let then = now + Duration::from_secs(at);
        assert!(
            is_granted(&store, &asked("t1", "POST", "/a"), s, then),
            "{at}"
        );
        assert!(
            is_granted(&store, &asked("t1", "DELETE", "/b"), s, then),
            "{at}"
        );
    }
    assert!(!is_granted(&store, &asked("t2", "POST", "/a"), s, now));
    let late = now + Duration::from_secs(600);
    assert!(!is_granted(&store, &asked("t1", "POST", "/a"), s, late));
}

#[test]
fn an_approver_narrows_the_grant_and_cannot_widen_it() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::For(Duration::from_secs(600)));
    let id = pending_id(&store, &asked("t1", "POST", "/a"), s, now);
    assert_eq!(
        store
            .approve(&id, "approver-1", None, Some(Grant::Task), now)
            .unwrap_err(),
        AnswerError::WiderGrant {
            asked: Grant::Task,
            allowed: Grant::For(Duration::from_secs(600))
        }
    );
    assert_eq!(
        store.get(&id).unwrap().state,
        State::Pending,
        "a refusal changes nothing"
    );
    store
        .approve(&id, "approver-1", None, Some(Grant::Request), now)
        .unwrap();
    assert!(is_granted(&store, &asked("t1", "POST", "/a"), s, now));
    assert!(!is_granted(&store, &asked("t1", "POST", "/b"), s, now));
}

#[test]
fn two_approvers_must_be_two_people() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(2, Grant::Task);
    let a = asked("t1", "POST", "/deploy");
    let id = pending_id(&store, &a, s, now);
    assert!(matches!(
        store.approve(&id, "alice", None, None, now),
        Ok(Change::Approved(_))
    ));
    assert!(
        !is_granted(&store, &a, s, now),
        "one approval is not enough"
    );
    assert_eq!(
        store.approve(&id, " alice ", None, None, now).unwrap_err(),
        AnswerError::SameApprover {
            id: id.clone(),
            approver: "alice".into()
        }
    );
    assert!(
        !is_granted(&store, &a, s, now),
        "the same approver twice is not enough"
    );
    assert!(matches!(
        store.approve(
            &id,
            "bob",
            Some("looked at it"),
            Some(Grant::For(Duration::from_secs(60))),
            now
        ),
        Ok(Change::Granted(_))
    ));
    let approval = store.get(&id).unwrap();
    assert_eq!(approval.approvers(), ["alice", "bob"]);
    assert_eq!(approval.grant, Some(Grant::For(Duration::from_secs(60))));
    assert!(is_granted(&store, &a, s, now));
}

#[test]
fn a_denial_sticks_for_identical_requests_until_the_task_ends() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::Request);
    let a = asked("t1", "DELETE", "/repos/a/b");
    let id = pending_id(&store, &a, s, now);
    assert_eq!(
        store.deny(&id, "approver-1", " ", now).unwrap_err(),
        AnswerError::NoReason
    );
    assert_eq!(
        store.deny(&id, "", "no", now).unwrap_err(),
        AnswerError::NoApprover
    );
    store.deny(&id, "approver-1", "not this repo", now).unwrap();
    let (check, changes) = store.check(&a, s, Context::default, now);
    let Check::Denied(denied) = check else {
        panic!("not denied: {check:?}");
    };
    assert!(changes.is_empty(), "no new pending approval");
    assert_eq!(denied.id, id);
    assert_eq!(
        denied.denial.unwrap().reason.as_deref(),
        Some("not this repo")
    );
    assert_eq!(store.list(Some(State::Pending), None).len(), 0);
    // Decided: it cannot be answered again.
    for err in [
        store
            .approve(&id, "approver-2", None, None, now)
            .unwrap_err(),
        store.deny(&id, "approver-2", "again", now).unwrap_err(),
    ] {
        assert_eq!(
            err,
            AnswerError::Decided {
                id: id.clone(),
                state: State::Denied
            }
        );
    }
    assert_eq!(
        store.approve("apr-nope", "a", None, None, now).unwrap_err(),
        AnswerError::NotFound("apr-nope".into())
    );
    store.end_task("t1", now);
    assert!(store.get(&id).is_none());
    assert_ne!(pending_id(&store, &a, s, now), id);
}

#[test]
fn pending_approvals_expire_and_end_with_their_task() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::Request);
    let a = asked("t1", "POST", "/a");
    let id = pending_id(&store, &a, s, now);
    let Check::Pending { mut changes, .. } = store.check(&a, s, Context::default, now).0 else {
        panic!()
    };
    let late = now + TTL;
    let expired = store.expire(late);
    assert!(matches!(&expired[..], [Change::Expired(x)] if x.id == id));
    assert_eq!(*changes.borrow_and_update(), State::Expired);
    assert_eq!(
        store.approve(&id, "a", None, None, late).unwrap_err(),
        AnswerError::Decided {
            id: id.clone(),
            state: State::Expired
        }
    );
    // Asked again, it is asked anew.
    let again = pending_id(&store, &a, s, late);
    assert_ne!(again, id);
    let ended = store.end_task("t1", late);
    assert!(matches!(&ended[..], [Change::Expired(x)] if x.id == again));
    assert!(store.list(None, Some("t1")).is_empty());
}

#[test]
fn a_grant_wakes_whoever_waits() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::Request);
    let a = asked("t1", "POST", "/a");
    let Check::Pending {
        approval,
        mut changes,
        created,
    } = store.check(&a, s, Context::default, now).0
    else {
        panic!()
    };
    assert!(created);
    assert!(!changes.has_changed().unwrap());
    store
        .approve(&approval.id, "approver-1", None, None, now)
        .unwrap();
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), State::Granted);
}

#[test]
fn the_list_filters_by_state_and_task() {
    let store = Approvals::new(TTL);
    let now = Instant::now();
    let s = spec(1, Grant::Request);
    let one = pending_id(&store, &asked("t1", "POST", "/a"), s, now);
    let two = pending_id(
        &store,
        &asked("t2", "POST", "/a"),
        s,
        now + Duration::from_secs(1),
    );
    store.approve(&two, "a", None, None, now).unwrap();
    let ids = |list: Vec<Approval>| list.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(None, None)), [one.clone(), two.clone()]);
    assert_eq!(ids(store.list(Some(State::Pending), None)), [one]);
    assert_eq!(ids(store.list(Some(State::Granted), Some("t2"))), [two]);
    assert!(store.list(Some(State::Granted), Some("t1")).is_empty());
    assert_eq!(State::parse("expired"), Some(State::Expired));
    assert_eq!(State::parse("approved"), None);
}
