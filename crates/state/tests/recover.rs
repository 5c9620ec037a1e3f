//! `store::force_voters`, the operator's way on after losing a majority of the voters: the
//! survivor is made the only voter, takes writes again with what it had, and the lost voters
//! follow it when they come back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atoll_state::{Expect, Request, Response, store};
use openraft::BasicNode;
use serde_json::json;

fn put(key: &str, v: u64) -> Request {
    Request::Put { key: key.into(), value: json!(v), expect: Expect::Any }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_made_the_only_voter_takes_writes_and_the_lost_voters_follow_it_back() {
    let c = common::Cluster::start(3, 0, false).await;
    let leader = c.leader().unwrap();
    assert!(matches!(c.write(leader, put("before", 1)).await, Some(Response::Done { .. })));
    // Two of three voters are lost: no write can be committed.
    let survivor = leader;
    let lost: Vec<u64> = (0..3).filter(|&i| i != survivor).collect();
    for &l in &lost {
        c.kill(l).await;
    }
    assert!(!matches!(c.write(survivor, put("during", 2)).await, Some(Response::Done { .. })), "no majority, no write");

    c.kill(survivor).await;
    let nodes: BTreeMap<u64, BasicNode> = (0..3).map(|i| (i, BasicNode::new(format!("node{i}")))).collect();
    let r = store::force_voters(&c.path(survivor), survivor, BTreeSet::from([survivor]), nodes).unwrap();
    assert!(r.term > 1 && r.index > 0, "{r:?}");
    assert_eq!((r.epoch, store::epoch(&c.path(survivor)).unwrap(), store::epoch(&c.path(lost[0])).unwrap()), (1, 1, 0), "a new epoch");
    c.boot(survivor).await;
    let raft = c.raft(survivor).unwrap();
    raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.current_leader == Some(survivor), "the survivor to lead").await.unwrap();
    assert!(matches!(c.write(survivor, put("after", 3)).await, Some(Response::Done { .. })), "writes again");
    assert_eq!(c.read(survivor, "before").await, Some(Some(1)), "what it had is kept");

    // The lost voters come back as learners (the forced membership kept them as nodes) and
    // catch up with the survivor's log.
    for &l in &lost {
        c.boot(l).await;
    }
    let last = raft.metrics().borrow().last_log_index.unwrap();
    for &l in &lost {
        let r = c.raft(l).unwrap();
        r.wait(Some(Duration::from_secs(10))).applied_index_at_least(Some(last), "caught up").await.unwrap();
        assert_eq!(c.reader(l).unwrap().get("after").unwrap().value, json!(3));
    }
    let voters: BTreeSet<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    assert_eq!(voters, BTreeSet::from([survivor]));
}
