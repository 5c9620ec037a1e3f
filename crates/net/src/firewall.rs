//! Other tables' `forward` chains that would drop Atoll's forwarded traffic (containers'
//! outbound connections, published ports reached from other hosts, bridged traffic when
//! `bridge-nf-call-iptables` is on). In nftables a packet must be accepted by every base
//! chain on its hook, so a `policy drop` in someone else's forward chain is final whatever
//! `inet atoll` says. The usual culprit is docker: started where IPv4 forwarding was off, it
//! sets `ip filter FORWARD` to drop.
//!
//! [`forward_drops`] finds such chains in `nft -j list ruleset` (pure). For docker's, Atoll
//! applies docker's documented remedy: accept rules for its bridges in `DOCKER-USER`, the
//! chain docker leaves to users, written with the same `iptables` docker uses (so docker's own
//! tools keep reading the table): the one place Atoll changes a table not its own. Other
//! chains are named, with the fix, in the log and `atoll info`. The daemon checks at start,
//! whenever it writes its table, and on every change another program makes (`nft monitor`).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::nft::{BRIDGE_PREFIX, TABLE};

/// The chain docker leaves to users, jumped to first from its `FORWARD`.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// A base chain of another table on the `forward` hook whose policy is drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardDrop {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// It jumps to `DOCKER-USER` in its table: docker's, which has a documented remedy.
    pub docker_user: bool,
    /// It (or its `DOCKER-USER`) accepts traffic from and to Atoll's bridges already.
    pub accepts_atoll: bool,
}

impl ForwardDrop {
    pub fn name(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.chain)
    }

    /// What the log and `atoll info` say about it.
    pub fn describe(&self) -> String {
        let name = self.name();
        if self.docker_user {
            let state = if self.accepts_atoll { "Atoll added" } else { "Atoll could not add" };
            format!(
                "{name} (docker's) drops forwarded traffic by default; {state} accept rules for its bridges ({BRIDGE_PREFIX}*) \
                 to {} {} {DOCKER_USER}, as docker documents",
                self.family, self.table
            )
        } else {
            format!(
                "{name} drops forwarded traffic by default, so containers' outbound traffic and published ports reached from other \
                 hosts are dropped: accept Atoll's bridges in it (nft insert rule {0} {1} {2} iifname \"{BRIDGE_PREFIX}*\" accept; \
                 nft insert rule {0} {1} {2} oifname \"{BRIDGE_PREFIX}*\" accept)",
                self.family, self.table, self.chain
            )
        }
    }
}

/// Whether a rule (its `expr` list) accepts packets whose `key` (iifname or oifname) is one of
/// Atoll's bridges, without other conditions that would narrow it.
fn accepts_bridges(expr: &[Value], key: &str) -> bool {
    let wildcard = format!("{BRIDGE_PREFIX}*");
    let mut matches_key = false;
    for e in expr {
        if let Some(m) = e.get("match") {
            let on = m.pointer("/left/meta/key").and_then(Value::as_str);
            let right = m.get("right").and_then(Value::as_str);
            let op = m.get("op").and_then(Value::as_str);
            if on == Some(key) && right == Some(&wildcard) && op == Some("==") {
                matches_key = true;
            } else {
                return false;
            }
        }
    }
    matches_key && expr.iter().any(|e| e.get("accept").is_some())
}

/// The forward chains of other tables that drop by default, from `nft -j list ruleset`.
pub fn forward_drops(ruleset: &Value) -> Vec<ForwardDrop> {
    let items = ruleset.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let rules_of = |family: &str, table: &str, chain: &str| -> Vec<Vec<Value>> {
        items
            .iter()
            .filter_map(|i| i.get("rule"))
            .filter(|r| s(r, "family") == family && s(r, "table") == table && s(r, "chain") == chain)
            .map(|r| r.get("expr").and_then(Value::as_array).cloned().unwrap_or_default())
            .collect()
    };
    let mut out = Vec::new();
    for c in items.iter().filter_map(|i| i.get("chain")) {
        if s(c, "hook") != "forward" || s(c, "policy") != "drop" || (s(c, "family") == "inet" && s(c, "table") == TABLE) {
            continue;
        }
        let (family, table, chain) = (s(c, "family"), s(c, "table"), s(c, "name"));
        let own = rules_of(&family, &table, &chain);
        let jumps_user = own.iter().any(|e| e.iter().any(|x| x.pointer("/jump/target").and_then(Value::as_str) == Some(DOCKER_USER)));
        let mut rules = own;
        if jumps_user {
            rules.extend(rules_of(&family, &table, DOCKER_USER));
        }
        let accepts_atoll = ["iifname", "oifname"].iter().all(|k| rules.iter().any(|e| accepts_bridges(e, k)));
        out.push(ForwardDrop { family, table, chain, docker_user: jumps_user, accepts_atoll });
    }
    out
}

/// Whether a line of `nft monitor` (`add rule inet atoll forward …`, `delete table inet
/// atoll`) is about the table `family name`.
pub fn about_table(line: &str, family: &str, name: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).any(|w| w == [family, name])
}

/// Docker's remedy, in the order it takes effect: Atoll's containers reach docker's bridges
/// only the way docker allows others to (its chains decide: RETURN), everything else from and
/// to Atoll's bridges is accepted here (Atoll's own table still filters it).
const REMEDY: [&str; 4] = ["-i at-+ -o docker0 -j RETURN", "-i at-+ -o br-+ -j RETURN", "-i at-+ -j ACCEPT", "-o at-+ -j ACCEPT"];

fn iptables(family: &str) -> Option<&'static str> {
    // The nft-backed one (docker's table is visible to nft, so that is the one it used).
    let candidates: &[&str] = match family {
        "ip" => &["iptables-nft", "iptables"],
        "ip6" => &["ip6tables-nft", "ip6tables"],
        _ => &[],
    };
    candidates.iter().copied().find(|c| Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
}

fn run(tool: &str, args: &str) -> bool {
    Command::new(tool)
        .arg("-w")
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Puts [`REMEDY`] at the top of the `DOCKER-USER` chain of `family`'s `table` (only `filter`
/// exists there). Returns whether the rules are in place.
pub fn apply_docker_user(family: &str, table: &str) -> bool {
    let Some(tool) = iptables(family) else { return false };
    let t = format!("-t {table}");
    if REMEDY.iter().all(|r| run(tool, &format!("{t} -C {DOCKER_USER} {r}"))) {
        return true;
    }
    // Some missing, or out of order: take ours out and put them back in order.
    for r in REMEDY {
        while run(tool, &format!("{t} -D {DOCKER_USER} {r}")) {}
    }
    REMEDY.iter().rev().all(|r| run(tool, &format!("{t} -I {DOCKER_USER} 1 {r}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(user_rules: &str) -> Value {
        let text = format!(
            r#"{{"nftables": [
            {{"chain": {{"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}}},
            {{"rule": {{"family": "ip", "table": "filter", "chain": "FORWARD", "expr": [{{"counter": null}}, {{"jump": {{"target": "DOCKER-USER"}}}}]}}}},
            {{"chain": {{"family": "ip", "table": "filter", "name": "DOCKER-USER"}}}},
            {user_rules}
            {{"chain": {{"family": "inet", "table": "fw", "name": "fwd", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}}},
            {{"chain": {{"family": "inet", "table": "fw", "name": "open", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}},
            {{"chain": {{"family": "inet", "table": "atoll", "name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}}}
            ]}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    fn rule(chain: &str, key: &str, right: &str, verdict: &str) -> String {
        format!(
            r#"{{"rule": {{"family": "ip", "table": "filter", "chain": "{chain}", "expr": [{{"match": {{"op": "==", "left": {{"meta": {{"key": "{key}"}}}}, "right": "{right}"}}}}, {{"counter": null}}, {{"{verdict}": null}}]}}}},"#
        )
    }

    #[test]
    fn monitor_lines_about_atolls_own_table_are_told_apart() {
        for ours in
            ["delete table inet atoll", "add table inet atoll { comment \"x\" }", "add rule inet atoll forward ct state established accept"]
        {
            assert!(about_table(ours, "inet", TABLE), "{ours}");
        }
        for theirs in ["add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }", "add table inet atoll2"] {
            assert!(!about_table(theirs, "inet", TABLE), "{theirs}");
        }
    }

    #[test]
    fn dockers_forward_drop_is_found_and_so_is_its_remedy() {
        let found = forward_drops(&ruleset(""));
        assert_eq!(found.iter().map(ForwardDrop::name).collect::<Vec<_>>(), ["ip filter FORWARD", "inet fw fwd"]);
        assert!(found[0].docker_user && !found[0].accepts_atoll);
        assert!(!found[1].docker_user && !found[1].accepts_atoll);
        let fixed = format!("{}{}", rule("DOCKER-USER", "iifname", "at-*", "accept"), rule("DOCKER-USER", "oifname", "at-*", "accept"));
        assert!(forward_drops(&ruleset(&fixed))[0].accepts_atoll);
        // Half a remedy, or one that returns instead of accepting, is not one.
        assert!(!forward_drops(&ruleset(&rule("DOCKER-USER", "oifname", "at-*", "accept")))[0].accepts_atoll);
        let returns = format!("{}{}", rule("DOCKER-USER", "iifname", "at-*", "return"), rule("DOCKER-USER", "oifname", "at-*", "accept"));
        assert!(!forward_drops(&ruleset(&returns))[0].accepts_atoll);
        assert!(found[1].describe().contains("nft insert rule inet fw fwd iifname \"at-*\" accept"), "{}", found[1].describe());
    }
}
