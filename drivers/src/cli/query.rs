//! `weft network` and `weft stats`: what a running node knows and counts.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use super::{fail, init_logging, when, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::{links_text, HostReport, StatsReport};

/// Arguments of `weft network`.
#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Print the hosts as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `weft stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Print the counters as JSON.
    #[arg(long)]
    json: bool,
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn json_line(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default() + "\n"
}

/// Runs `weft network`: one line per host (direct or heard-of, address, last seen).
pub fn network(args: NetworkArgs) -> ExitCode {
    init_logging("warn");
    match ask(&args.net, &ControlRequest::Network) {
        Ok(ControlReply::Hosts(hosts)) if args.json => print(&json_line(&hosts)),
        Ok(ControlReply::Hosts(hosts)) => print(&hosts_table(&hosts)),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft stats`: node counters, then one line per connection.
pub fn stats(args: StatsArgs) -> ExitCode {
    init_logging("warn");
    match ask(&args.net, &ControlRequest::Stats) {
        Ok(ControlReply::Stats(stats)) if args.json => print(&json_line(&stats)),
        Ok(ControlReply::Stats(stats)) => print(&stats_text(&stats)),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

fn hosts_table(hosts: &[HostReport]) -> String {
    let mut text = format!(
        "{:<18}{:<24}{:<10}{}\n",
        "NODE", "ADDRESS", "LINK", "LAST SEEN"
    );
    for h in hosts {
        let _ = writeln!(
            text,
            "{:<18}{:<24}{:<10}{} ago",
            // A peer chose both (its HELLO's address; on a p2p.today network, its id).
            super::printable(short(&h.node)),
            super::printable(h.addr.as_deref().unwrap_or("-")),
            if h.direct { "direct" } else { "heard-of" },
            when::span(h.last_seen_ms_ago)
        );
    }
    text
}

fn stats_text(s: &StatsReport) -> String {
    let c = &s.counters;
    let mut text = format!(
        "node {} of {}, incarnation {}, {} driver, listening on {}, up {}\n",
        short(&s.node),
        s.network,
        s.incarnation,
        s.driver,
        s.listen_addr.as_deref().unwrap_or("-"),
        when::span(s.uptime_ms)
    );
    let _ = writeln!(text, "{}", links_text(&s.links, s.network_secret));
    let rows = [
        ("frames received", c.frames_received),
        ("frames sent", c.frames_sent),
        ("bytes received", c.bytes_received),
        ("bytes sent", c.bytes_sent),
        ("broadcasts originated", c.broadcasts_originated),
        ("broadcasts received", c.broadcasts_received),
        ("broadcasts delivered", c.broadcasts_delivered),
        ("broadcast duplicates", c.broadcast_duplicates),
        ("broadcast transmissions", c.broadcast_transmissions),
        ("relays dropped", c.relays_dropped),
        ("connections failed", c.connections_failed),
        ("dials failed", c.dials_failed),
        ("redials", c.redials),
        ("known peers stores", c.known_peers_stores),
        ("handshakes completed", c.handshakes_completed),
        ("discovery dials", c.discovery_dials),
        ("dedicated dials", c.dedicated_dials),
        ("bulk refused", c.bulk_refused),
        ("unroutable", c.unroutable),
        ("table writes originated", c.table_writes_originated),
        ("table writes received", c.table_writes_received),
        ("table catch-up bytes", c.table_catchup_bytes),
        ("listeners", s.listeners),
        ("listener drops", s.listener_drops),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "  {name:<26}{value:>14}");
    }
    let r = &c.refused;
    let refused = [
        ("forged broadcasts", r.broadcasts_forged),
        ("broadcasts over rate", r.broadcasts_over_rate),
        ("peers over broadcast rate", r.peers_over_rate),
        ("cascades dropped", r.cascades_dropped),
        ("peers over cascade rate", r.peers_cascade_limited),
        ("table bad signatures", r.table_writes_bad_signature),
        ("table leases too long", r.table_writes_lease_too_long),
        ("table writes too new", r.table_writes_too_new),
        ("inbound over host share", r.inbound_refused_per_address),
        ("handshake buffer closes", r.handshake_buffer_closes),
        ("frame buffer closes", r.frame_buffer_closes),
        ("discovery dials refused", r.discovery_dials_refused),
        ("redials refused", r.redials_refused),
        ("unproven inbound evicted", r.inbound_evicted_unproven),
    ];
    // Shown only when something was refused: a quiet network prints no section.
    if refused.iter().any(|(_, v)| *v > 0) {
        let _ = writeln!(text, "REFUSED");
        for (name, value) in refused.iter().filter(|(_, v)| *v > 0) {
            let _ = writeln!(text, "  {name:<26}{value:>14}");
        }
    }
    let active: Vec<_> = c
        .traffic
        .iter()
        .filter(|t| t.frames_in > 0 || t.frames_out > 0)
        .collect();
    if !active.is_empty() {
        let _ = writeln!(
            text,
            "{:<46}{:>9}{:>9}{:>11}{:>11}",
            "TRAFFIC", "FR IN", "FR OUT", "BYTES IN", "BYTES OUT"
        );
        for t in active {
            let _ = writeln!(
                text,
                "{:<46}{:>9}{:>9}{:>11}{:>11}",
                format!("  {}", t.protocol),
                t.frames_in,
                t.frames_out,
                t.bytes_in,
                t.bytes_out
            );
        }
    }
    let _ = writeln!(
        text,
        "{:<6}{:<22}{:<18}{:>9}{:>9}{:>11}{:>11}{:>8}{:>10}{:>10}{:>10}",
        "CONN",
        "ADDRESS",
        "PEER",
        "FR IN",
        "FR OUT",
        "BYTES IN",
        "BYTES OUT",
        "DROPS",
        "QUEUED",
        "IN FLIGHT",
        "UNWRITTEN"
    );
    for k in &s.connections {
        let _ = writeln!(
            text,
            "{:<6}{:<22}{:<18}{:>9}{:>9}{:>11}{:>11}{:>8}{:>10}{:>10}{:>10}",
            k.conn,
            k.addr,
            match (&k.peer, &k.dedicated) {
                (Some(peer), _) => short(peer).to_owned(),
                (None, Some(family)) => format!("({family} only)"),
                (None, None) => "-".to_owned(),
            },
            k.frames_in,
            k.frames_out,
            k.bytes_in,
            k.bytes_out,
            k.relays_dropped,
            k.queued_bytes,
            k.in_flight_bytes,
            k.unwritten_bytes
        );
        for t in k
            .by_protocol
            .iter()
            .filter(|t| t.frames_in > 0 || t.frames_out > 0)
        {
            let _ = writeln!(
                text,
                "{:<6}{:<40}{:>9}{:>9}{:>11}{:>11}",
                "",
                format!("  {}", t.protocol),
                t.frames_in,
                t.frames_out,
                t.bytes_in,
                t.bytes_out
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_say_how_long_ago_they_were_seen() {
        let host = HostReport {
            node: "ab".repeat(32),
            addr: Some("127.0.0.1:7000".into()),
            direct: true,
            last_seen_ms_ago: 200_500,
            last_seen_unix_ms: Some(1_000_000),
        };
        let table = hosts_table(std::slice::from_ref(&host));
        let row = table.lines().nth(1).unwrap();
        assert!(row.ends_with("direct    3 min 20 s ago"), "{row:?}");
        // An address a peer chose to hold terminal escapes and a newline: shown escaped.
        let sly = HostReport {
            addr: Some("\u{1b}]0;x\u{7}\u{1b}[2J\n:1".into()),
            node: "\u{1b}[31mred".into(),
            ..host
        };
        let table = hosts_table(&[sly]);
        assert_eq!(table.lines().count(), 2, "{table:?}");
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{7}'),
            "{table:?}"
        );
    }
}
