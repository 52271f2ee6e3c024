//! Clustering on hand-written fixtures: rewrites of one story by several outlets (English,
//! Chinese, Vietnamese) must form one cluster; different stories on the same topic the same
//! week must not; one canonical URL from two feeds is one story.

use chrono::{DateTime, Duration, Utc};
use policywatch::canon::canonical_url;
use policywatch::cluster::{signature, ClusterIndex, Placement, Signature};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    story: String,
    feed: String,
    hours: i64,
    url: String,
    title: String,
    summary: String,
}

fn load() -> Vec<Fixture> {
    load_file("stories.json")
}

fn load_file(name: &str) -> Vec<Fixture> {
    let path = format!(
        "{}/tests/fixtures/cluster/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

fn at(hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_776_240_000 + hours * 3600, 0).expect("valid time")
}

/// Stories told in another language are allowed (not required) to join their English story.
fn base(story: &str) -> &str {
    story
        .strip_suffix("-zh")
        .or_else(|| story.strip_suffix("-vi"))
        .unwrap_or(story)
}

/// Inserts the fixtures in time order; returns each one's cluster.
fn run(fx: &[Fixture]) -> Vec<i64> {
    let mut order: Vec<usize> = (0..fx.len()).collect();
    order.sort_by_key(|&i| fx[i].hours);
    let mut ix = ClusterIndex::new(Duration::days(3));
    let mut cluster = vec![0; fx.len()];
    let mut feeds: Vec<&str> = Vec::new();
    for i in order {
        let f = &fx[i];
        let feed = match feeds.iter().position(|n| *n == f.feed) {
            Some(k) => k,
            None => {
                feeds.push(&f.feed);
                feeds.len() - 1
            }
        } as i64;
        let sig = signature(&f.title, &f.summary);
        let url = canonical_url(&f.url);
        cluster[i] = ix
            .insert(i as i64, feed, url.as_deref(), &sig, at(f.hours))
            .unwrap_or(i as i64);
    }
    cluster
}

#[test]
fn rewrites_cluster_and_distinct_stories_do_not() {
    check(&load());
}

/// Written after the thresholds were tuned on `stories.json`, and not tuned on: a check that
/// they generalise (HBM curbs vs Entity List additions the same day; Nvidia H20 sales resuming
/// vs China questioning H20 security the same week).
#[test]
fn held_out_fixtures_cluster_too() {
    check(&load_file("heldout.json"));
}

fn check(fx: &[Fixture]) {
    let cluster = run(fx);
    let mut problems = Vec::new();
    for i in 0..fx.len() {
        for j in (i + 1)..fx.len() {
            let (a, b) = (&fx[i], &fx[j]);
            let same = cluster[i] == cluster[j];
            if a.story == b.story && !same {
                problems.push(format!(
                    "split: [{}] {} / {}  vs  {} / {}",
                    a.story, a.feed, a.title, b.feed, b.title
                ));
            }
            if base(&a.story) != base(&b.story) && same {
                problems.push(format!(
                    "merged: [{}] {}  vs  [{}] {}",
                    a.story, a.title, b.story, b.title
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn same_canonical_url_from_two_feeds_is_one_story_by_url() {
    let fx = load();
    let pair: Vec<&Fixture> = fx.iter().filter(|f| f.story == "same-url").collect();
    assert_eq!(pair.len(), 2);
    let mut ix = ClusterIndex::new(Duration::days(3));
    let s0 = signature(&pair[0].title, &pair[0].summary);
    let s1 = signature(&pair[1].title, &pair[1].summary);
    // The texts alone are not similar: only the URL makes them one story.
    assert!(policywatch::cluster::similarity(&s0, &s1) < policywatch::cluster::SAME_STORY);
    let u0 = canonical_url(&pair[0].url);
    let u1 = canonical_url(&pair[1].url);
    assert!(u0.is_some());
    assert_eq!(u0, u1);
    ix.insert(1, 1, u0.as_deref(), &s0, at(0));
    let a = ix.insert_detailed(2, 2, u1.as_deref(), &s1, at(1));
    assert_eq!(a.cluster, 1);
    assert_eq!(a.placement, Placement::SameUrl { with: 1 });
}

#[test]
fn reissued_with_new_title_and_url_stays_in_its_cluster() {
    // A feed re-issues a delivered story: new GUID, reworded headline, moved URL.
    let mut ix = ClusterIndex::new(Duration::days(3));
    let first = signature(
        "US adds 80 companies to trade blacklist, including Inspur subsidiaries",
        "The Commerce Department added 80 companies, most of them Chinese, to its Entity List, \
         citing support for China's military and supercomputer development.",
    );
    let again = signature(
        "UPDATE 2-US adds 80 firms to Entity List; Inspur units named",
        "The Commerce Department added 80 companies, most of them Chinese, to its Entity List, \
         citing support for China's military and supercomputer development. Adds comment.",
    );
    ix.insert(
        100,
        1,
        canonical_url("https://wire.example/a/1").as_deref(),
        &first,
        at(0),
    );
    let a = ix.insert_detailed(
        230,
        1,
        canonical_url("https://wire.example/world/a-1-updated").as_deref(),
        &again,
        at(5),
    );
    assert_eq!(a.cluster, 100, "{a:?}");
    assert!(matches!(a.placement, Placement::Similar { with: 100, .. }));
}

#[test]
fn order_of_arrival_does_not_change_the_grouping() {
    let fx = load();
    let forward = run(&fx);
    // Same times, but feed them in reverse file order among equal hours: the partition (which
    // items share a cluster) must be the same even if the representative differs.
    let mut rev: Vec<Fixture> = load();
    rev.reverse();
    let backward = run(&rev);
    let n = fx.len();
    for i in 0..n {
        for j in 0..n {
            let f = forward[i] == forward[j];
            let b = backward[n - 1 - i] == backward[n - 1 - j];
            assert_eq!(f, b, "{} / {}", fx[i].title, fx[j].title);
        }
    }
}

/// Prints every pair's weighted score for tuning: `cargo test --test cluster_fixtures -- --ignored --nocapture`.
#[test]
#[ignore]
fn dump_scores() {
    // CLUSTER_FIXTURE=heldout.json picks another fixture file.
    let fx =
        load_file(&std::env::var("CLUSTER_FIXTURE").unwrap_or_else(|_| "stories.json".to_string()));
    let mut ix = ClusterIndex::new(Duration::days(30));
    let sigs: Vec<Signature> = fx.iter().map(|f| signature(&f.title, &f.summary)).collect();
    for (i, s) in sigs.iter().enumerate() {
        ix.insert(i as i64 + 1_000_000, i as i64, None, s, at(0));
    }
    let mut rows = Vec::new();
    for i in 0..fx.len() {
        for j in (i + 1)..fx.len() {
            let sc = ix.score(&sigs[i], &sigs[j]);
            if sc > 0.0 {
                let rel = if fx[i].story == fx[j].story {
                    "SAME"
                } else if base(&fx[i].story) == base(&fx[j].story) {
                    "xlang"
                } else {
                    "diff"
                };
                rows.push((sc, rel, i, j));
            }
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (sc, rel, i, j) in rows {
        println!(
            "{sc:.3} {rel:5} {:<60.60} | {:<60.60}",
            fx[i].title, fx[j].title
        );
    }
}
