//! Drops (SPEC.md §24), when the peer announces the family (`0x05`): its answers for drops
//! it does not hold (§24.5), the malformed drop payloads refused (§24.5), and, when it holds a
//! drop (it sends DROP_SUBSCRIBE for it on a new link that announces the family), that drop's
//! heads, versions and file list served by the rules of §24.2 and §24.3, and versions the kit
//! forges for it refused and never shown among its heads (§24.2).
//!
//! The kit cannot make a peer subscribe to a drop from the wire (a subscription is the
//! peer's application's doing), so every check here either asks the peer or pushes to it,
//! and judges its answer.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::{
    check_version, ByeReason, Code, DropFile, DropFiles, DropGetFiles, DropGetVersion, DropHeads,
    DropId, DropManifest, DropMessage, DropNotFound, DropOwners, DropSubscribe, DropUnsubscribe,
    Family, ManifestFields, Message, RootHasher, VersionId,
};

use super::super::conn::{bye_reason, span, with_msg, Conn, Got};
use super::super::hello::{LinkOpts, Me};
use super::super::vectors::{self, Invalid};
use super::super::{Ctx, Link, Step, Stop};

/// Most versions of a held drop the kit fetches to check its chain (§24.2): the heads and
/// their ancestors, newest first.
const VERSIONS_WALKED_MAX: usize = 64;

/// Most DROP_FILES batches the kit asks for to check a file list (§24.3): 256 files each.
const FILE_BATCHES_MAX: usize = 64;

/// Skips a check when the peer does not run drops.
fn needs_drops(ctx: &Ctx) -> Step {
    if ctx.runs(Family::Drops) {
        Ok(())
    } else {
        Err(Stop::Skip("the peer does not announce drops".into()))
    }
}

/// The kit's HELLO on a drops link: an ordinary link that also announces the drops family,
/// so the peer counts the kit as a peer that runs it (§8.9).
fn opts(ctx: &Ctx) -> LinkOpts {
    let mut opts = ctx.opts();
    opts.families |= Family::Drops.bit();
    opts
}

/// A fresh link announcing drops.
fn drops_link(ctx: &Ctx) -> Result<Link, String> {
    ctx.link_as(Me::fresh(), &opts(ctx))
}

/// A random 32-byte id.
fn random_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    id
}

/// The first 16 hex digits of an id, for reasons.
fn short(id: &VersionId) -> String {
    id.to_string().chars().take(16).collect()
}

/// Whether an invalid vector is a drop payload the decoder must refuse (§24.5): a
/// `MalformedPayload` whose code (bytes 6 and 7, after the length, the version and the flags)
/// is of family `0x05`. (`unknown_command_drop_0x0508` is a frame error, §2's.)
pub fn is_drop_payload_vector(v: &Invalid) -> bool {
    let bytes = v.bytes();
    v.error == "MalformedPayload"
        && bytes.len() >= 8
        && Code(u16::from_be_bytes([bytes[6], bytes[7]])).family() == Some(Family::Drops)
}

/// The drop message a frame carries, if it decodes.
fn drop_msg(f: &weft_engine::protocol::Frame) -> Option<DropMessage> {
    with_msg(f, |m| match m {
        Message::Drop(d) => Some(d),
        _ => None,
    })
    .flatten()
}

/// Reads frames until `pick` takes one (`Some`), a BYE or a close (an error), or `deadline`
/// (`Ok(None)`). Frames `pick` passes over are dropped.
fn read_until<T>(
    conn: &mut Conn,
    deadline: Instant,
    mut pick: impl FnMut(&weft_engine::protocol::Frame) -> Option<Result<T, String>>,
) -> Result<Option<T>, String> {
    loop {
        match conn.next(deadline) {
            Got::Frame(f) => {
                if let Some(r) = bye_reason(&f) {
                    return Err(format!("the peer closed the link with BYE({r:?})"));
                }
                if let Some(found) = pick(&f) {
                    return found.map(Some);
                }
            }
            Got::Closed => return Err("the peer closed the link".into()),
            Got::Timeout => return Ok(None),
        }
    }
}

/// Asks for `version` of `drop`: its manifest, or `None` for a DROP_NOTFOUND naming both
/// (§24.5).
fn ask_version(
    conn: &mut Conn,
    drop: DropId,
    version: VersionId,
    ctx: &Ctx,
) -> Result<Option<DropManifest>, String> {
    let get = DropMessage::GetVersion(DropGetVersion { drop, version });
    let answer = ask(
        conn,
        get,
        drop,
        version,
        Code::DROP_VERSION,
        ctx,
        |m| match m {
            DropMessage::Version(m) if m.drop == drop && m.version_id() == version => Some(*m),
            _ => None,
        },
    )?;
    answer.ok_or_else(|| {
        format!(
            "DROP_GET_VERSION of {}: no DROP_VERSION with that id nor DROP_NOTFOUND naming it within {}",
            short(&version),
            span(ctx.wait)
        )
    })
}

/// Asks for `version`'s file list from `from`: the files of the DROP_FILES that echoes the
/// request, or `None` for a DROP_NOTFOUND naming the drop and version (§24.5).
fn ask_files(
    conn: &mut Conn,
    drop: DropId,
    version: VersionId,
    from: u32,
    ctx: &Ctx,
) -> Result<Option<Vec<DropFile>>, String> {
    let get = DropMessage::GetFiles(DropGetFiles {
        drop,
        version,
        from,
    });
    let answer = ask(
        conn,
        get,
        drop,
        version,
        Code::DROP_FILES,
        ctx,
        |m| match m {
            DropMessage::Files(m) if m.drop == drop && m.version == version && m.from == from => {
                Some(m.files)
            }
            _ => None,
        },
    )?;
    answer.ok_or_else(|| {
        format!(
            "DROP_GET_FILES of {} from {from}: no DROP_FILES echoing it nor DROP_NOTFOUND within {}",
            short(&version),
            span(ctx.wait)
        )
    })
}

/// Sends `request` about `version` of `drop`, then waits for its answer: a frame of
/// `answer_code` that `pick` takes (`Some(Some(..))`), or a DROP_NOTFOUND naming the drop and
/// version (`Some(None)`); `None` if neither came within the wait. An answer of that code
/// that does not decode is an error.
fn ask<T>(
    conn: &mut Conn,
    request: DropMessage,
    drop: DropId,
    version: VersionId,
    answer_code: Code,
    ctx: &Ctx,
    pick: impl Fn(DropMessage) -> Option<T>,
) -> Result<Option<Option<T>>, String> {
    conn.send_msg(&Message::Drop(request), false);
    read_until(conn, Instant::now() + ctx.wait, |f| match f.code() {
        code if code == answer_code => match drop_msg(f) {
            Some(m) => pick(m).map(|t| Ok(Some(t))),
            None => Some(Err(format!("a {} does not decode", code.name()))),
        },
        Code::DROP_NOTFOUND => match drop_msg(f) {
            Some(DropMessage::NotFound(n)) if n.drop == drop && n.version == version => {
                Some(Ok(None))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Sends DROP_SUBSCRIBE for `drop`: the heads of the DROP_HEADS naming it that arrives
/// within the wait, or `None` if none does.
fn subscribe(conn: &mut Conn, drop: DropId, ctx: &Ctx) -> Result<Option<Vec<VersionId>>, String> {
    conn.send_msg(
        &Message::Drop(DropMessage::Subscribe(DropSubscribe { drop })),
        false,
    );
    read_until(conn, Instant::now() + ctx.wait, |f| {
        if f.code() != Code::DROP_HEADS {
            return None;
        }
        match drop_msg(f) {
            Some(DropMessage::Heads(DropHeads { drop: d, heads })) if d == drop => Some(Ok(heads)),
            Some(_) => None,
            None => Some(Err(
                "its DROP_HEADS does not decode (§24.5: at most 16 heads, strictly ascending)"
                    .to_string(),
            )),
        }
    })
}

/// A link on which the peer sent DROP_SUBSCRIBE (it holds that drop), and the drop.
fn held_drop(ctx: &Ctx) -> Result<(Link, DropId), Stop> {
    needs_drops(ctx)?;
    if ctx.holds_drop.get() == Some(&false) {
        return Err(Stop::Skip(
            "the peer holds no drop (no DROP_SUBSCRIBE on a new link)".into(),
        ));
    }
    let mut link = drops_link(ctx)?;
    let found = read_until(&mut link.conn, Instant::now() + ctx.wait, |f| {
        if f.code() != Code::DROP_SUBSCRIBE {
            return None;
        }
        Some(match drop_msg(f) {
            Some(DropMessage::Subscribe(s)) => Ok(s.drop),
            _ => Err("its DROP_SUBSCRIBE does not decode".to_string()),
        })
    })
    .map_err(|e| format!("a new link announcing drops: {e}"))?;
    match found {
        Some(drop) => {
            let _ = ctx.holds_drop.set(true);
            Ok((link, drop))
        }
        None => {
            let _ = ctx.holds_drop.set(false);
            Err(Stop::Skip(format!(
                "the peer holds no drop (no DROP_SUBSCRIBE on a new link within {})",
                span(ctx.wait)
            )))
        }
    }
}

/// A held drop the kit subscribed to.
struct Subscribed {
    /// The link it subscribed on.
    link: Link,
    /// The drop.
    drop: DropId,
    /// The heads its DROP_HEADS named.
    heads: Vec<VersionId>,
    /// The first of them.
    head: VersionId,
}

/// Subscribes to a drop the peer holds: its heads, at least one (else the check is
/// skipped).
fn subscribed(ctx: &Ctx) -> Result<Subscribed, Stop> {
    let (mut link, drop) = held_drop(ctx)?;
    let heads = subscribe(&mut link.conn, drop, ctx)
        .map_err(|e| format!("DROP_SUBSCRIBE of a drop it holds: {e}"))?
        .ok_or_else(|| {
            format!(
                "DROP_SUBSCRIBE of a drop it holds: no DROP_HEADS naming it within {}",
                span(ctx.wait)
            )
        })?;
    let Some(&head) = heads.first() else {
        return Err(Stop::Skip("its drop has no version yet".into()));
    };
    Ok(Subscribed {
        link,
        drop,
        heads,
        head,
    })
}

/// §24.5: DROP_GET_VERSION and DROP_GET_FILES for a drop the peer does not hold are each
/// answered by DROP_NOTFOUND naming the drop and the version.
pub fn unknown_drop_requests(ctx: &Ctx) -> Step {
    needs_drops(ctx)?;
    let mut link = drops_link(ctx)?;
    let drop = DropId(random_id());
    let version = VersionId(random_id());
    if let Some(m) = ask_version(&mut link.conn, drop, version, ctx)? {
        return Err(format!(
            "DROP_GET_VERSION of an unknown drop answered by version {}",
            m.version_id()
        )
        .into());
    }
    if let Some(files) = ask_files(&mut link.conn, drop, version, 0, ctx)? {
        return Err(format!(
            "DROP_GET_FILES of an unknown drop answered by DROP_FILES ({} files)",
            files.len()
        )
        .into());
    }
    Ok(())
}

/// §24.5: news of a drop the peer does not hold (DROP_SUBSCRIBE, DROP_UNSUBSCRIBE,
/// DROP_HEADS, a DROP_VERSION the kit signed for its own drop, an unasked DROP_FILES and
/// DROP_NOTFOUND) is taken, the link kept; a DROP_HEADS answering the subscription names no
/// version.
pub fn unknown_drop_news(ctx: &Ctx) -> Step {
    needs_drops(ctx)?;
    let mut link = drops_link(ctx)?;
    let me = link.me.clone();
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let version = first_version(&me, nonce);
    let drop = version.drop;
    let id = version.version_id();
    let messages = [
        DropMessage::Subscribe(DropSubscribe { drop }),
        DropMessage::Heads(DropHeads {
            drop,
            heads: vec![id],
        }),
        DropMessage::Version(Box::new(version)),
        DropMessage::Files(DropFiles {
            drop,
            version: id,
            from: 0,
            files: Vec::new(),
        }),
        DropMessage::NotFound(DropNotFound { drop, version: id }),
        DropMessage::Unsubscribe(DropUnsubscribe { drop }),
    ];
    for m in messages {
        link.conn.send_msg(&Message::Drop(m), false);
    }
    link.conn
        .expect_alive(ctx.wait)
        .map_err(|e| format!("news of a drop it does not hold: {e}"))?;
    for f in link.conn.logged(Code::DROP_HEADS) {
        match drop_msg(&f) {
            Some(DropMessage::Heads(h)) if h.drop == drop && !h.heads.is_empty() => {
                return Err(format!(
                    "DROP_HEADS of a drop it does not hold names {} versions",
                    h.heads.len()
                )
                .into());
            }
            Some(_) => {}
            None => return Err("its DROP_HEADS does not decode".to_string().into()),
        }
    }
    Ok(())
}

/// §24.5: every malformed drop payload vector (§18), on its own fresh link, gets
/// BYE(ProtocolViolation) and a close. (When the peer runs drops these are this check's,
/// not §4's.)
pub fn malformed_drop_payloads(ctx: &Ctx) -> Step {
    needs_drops(ctx)?;
    let (_, invalid) = vectors::load();
    let mine: Vec<&Invalid> = invalid
        .iter()
        .filter(|v| is_drop_payload_vector(v))
        .collect();
    if mine.is_empty() {
        return Err(Stop::Skip("no malformed drop vectors".into()));
    }
    for v in &mine {
        let mut link = drops_link(ctx)?;
        link.conn.send(&v.bytes());
        if let Err(e) = link.conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait) {
            return Err(format!(
                "`{}` ({}): {e} (the first failing of {} vectors; the rest not tried)",
                v.name,
                v.error,
                mine.len()
            )
            .into());
        }
    }
    Ok(())
}

/// §24.5: a drop the peer holds (it sent DROP_SUBSCRIBE for it): DROP_SUBSCRIBE is
/// answered by DROP_HEADS, each head's DROP_GET_VERSION by DROP_VERSION of that id, and
/// DROP_GET_VERSION and DROP_GET_FILES of a version it does not hold by DROP_NOTFOUND.
pub fn held_drop_served(ctx: &Ctx) -> Step {
    let Subscribed {
        mut link,
        drop,
        heads,
        ..
    } = subscribed(ctx)?;
    for head in &heads {
        if ask_version(&mut link.conn, drop, *head, ctx)?.is_none() {
            return Err(format!(
                "DROP_GET_VERSION of its head {} answered by DROP_NOTFOUND",
                short(head)
            )
            .into());
        }
    }
    let unknown = VersionId(random_id());
    if ask_version(&mut link.conn, drop, unknown, ctx)?.is_some() {
        return Err(
            "DROP_GET_VERSION of a random version answered by DROP_VERSION"
                .to_string()
                .into(),
        );
    }
    if ask_files(&mut link.conn, drop, unknown, 0, ctx)?.is_some() {
        return Err("DROP_GET_FILES of a random version answered by DROP_FILES"
            .to_string()
            .into());
    }
    Ok(())
}

/// §24.2: the versions the peer serves of a drop it holds (its heads and their ancestors, at
/// most `VERSIONS_WALKED_MAX`) each verify (rules 1–5) and follow their parents (rules
/// 6–12, `check_version`).
pub fn served_versions_follow_rules(ctx: &Ctx) -> Step {
    let Subscribed {
        mut link,
        drop,
        heads,
        ..
    } = subscribed(ctx)?;
    let mut have: BTreeMap<VersionId, DropManifest> = BTreeMap::new();
    let mut queue: VecDeque<VersionId> = heads.into_iter().collect();
    while let Some(v) = queue.pop_front() {
        if have.contains_key(&v) || have.len() >= VERSIONS_WALKED_MAX {
            continue;
        }
        let m = ask_version(&mut link.conn, drop, v, ctx)?.ok_or_else(|| {
            format!(
                "DROP_GET_VERSION of {}, a version it names, answered by DROP_NOTFOUND",
                short(&v)
            )
        })?;
        m.verify()
            .map_err(|e| format!("its version {} does not verify: {e}", short(&v)))?;
        queue.extend(m.parents.iter().copied());
        have.insert(v, m);
    }
    for (id, m) in &have {
        let parents: Option<Vec<&DropManifest>> = m.parents.iter().map(|p| have.get(p)).collect();
        // A version whose parents were not all fetched (past the walk's bound) is checked
        // by rules 1–5 above only.
        let Some(parents) = parents else { continue };
        check_version(m, &parents)
            .map_err(|e| format!("its version {} breaks §24.2: {e}", short(id)))?;
    }
    Ok(())
}

/// §24.3: the file list the peer serves of its drop's head (if it holds it: DROP_NOTFOUND
/// skips), fetched batch by batch, is in order and hashes to the root, count and bytes the
/// manifest names; a DROP_GET_FILES from its end gets DROP_FILES with no file.
pub fn file_list_matches_root(ctx: &Ctx) -> Step {
    let Subscribed {
        mut link,
        drop,
        head,
        ..
    } = subscribed(ctx)?;
    let manifest = ask_version(&mut link.conn, drop, head, ctx)?.ok_or_else(|| {
        format!(
            "DROP_GET_VERSION of its head {} answered by DROP_NOTFOUND",
            short(&head)
        )
    })?;
    let mut hasher = RootHasher::new();
    let mut whole = false;
    for _ in 0..FILE_BATCHES_MAX {
        let from = hasher.files();
        let Some(files) = ask_files(&mut link.conn, drop, head, from, ctx)? else {
            if from == 0 {
                return Err(Stop::Skip(
                    "it holds no file list of its head (DROP_NOTFOUND)".into(),
                ));
            }
            return Err(format!(
                "DROP_GET_FILES from {from} answered by DROP_NOTFOUND after earlier batches"
            )
            .into());
        };
        hasher
            .push_batch(&files)
            .map_err(|e| format!("its file list from {from}: {e}"))?;
        if files.is_empty() || hasher.files() >= manifest.files {
            whole = true;
            break;
        }
    }
    if !whole {
        return Err(Stop::Skip(format!(
            "its list of {} files is longer than the kit checks",
            manifest.files
        )));
    }
    let end = hasher.files();
    hasher.finish(&manifest).map_err(|e| {
        format!(
            "its file list of {} does not match its manifest: {e}",
            short(&head)
        )
    })?;
    // Past the list's end comes a DROP_FILES with no file.
    let rest = ask_files(&mut link.conn, drop, head, end, ctx)?
        .ok_or_else(|| format!("DROP_GET_FILES from its end ({end}) answered by DROP_NOTFOUND"))?;
    if !rest.is_empty() {
        return Err(format!(
            "DROP_GET_FILES from its end ({end}) answered by {} more files",
            rest.len()
        )
        .into());
    }
    Ok(())
}

/// The kit's forgeries for a version `head` of a held drop: each breaks one rule of §24.2.
fn forgeries(me: &Me, head: &DropManifest) -> Vec<(&'static str, DropManifest)> {
    let empty = RootHasher::new();
    let fields = |counter, parents, owners: DropOwners, drop, nonce| ManifestFields {
        drop,
        nonce,
        counter,
        parents,
        owners,
        root: empty.root(),
        files: 0,
        bytes: 0,
    };
    let child = || {
        fields(
            head.counter.saturating_add(1),
            vec![head.version_id()],
            head.owners.clone(),
            head.drop,
            head.nonce,
        )
    };
    let by_kit = |f: ManifestFields| {
        let signer = me.public_key();
        DropManifest::sign_with(f, signer, |bytes| me.identity.sign(bytes))
    };
    // Signed by the kit but naming the primary as its signer: the signature does not verify.
    let bad_signature = DropManifest::sign_with(child(), head.owners.primary, |bytes| {
        me.identity.sign(bytes)
    });
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let mut own = head.owners.clone();
    own.primary = me.public_key();
    own.secondary.retain(|k| *k != own.primary);
    vec![
        ("a version signed by a non-owner (rule 11)", by_kit(child())),
        (
            "a version whose signature does not verify (rule 5)",
            bad_signature,
        ),
        (
            "a first version not signed by the primary (rule 7)",
            by_kit(fields(
                1,
                Vec::new(),
                head.owners.clone(),
                head.drop,
                head.nonce,
            )),
        ),
        (
            "a version naming the drop under another key and nonce (rule 4)",
            by_kit(fields(1, Vec::new(), own, head.drop, nonce)),
        ),
    ]
}

/// §24.2: versions of a drop the peer holds that break a rule (signed by a non-owner, a
/// signature that does not verify, a first version not signed by the primary, another
/// drop's id), each pushed unasked on its own link, get BYE(ProtocolViolation); afterwards
/// none is among its heads.
pub fn forged_versions_refused(ctx: &Ctx) -> Step {
    let Subscribed {
        mut link,
        drop,
        head,
        ..
    } = subscribed(ctx)?;
    let manifest = ask_version(&mut link.conn, drop, head, ctx)?.ok_or_else(|| {
        format!(
            "DROP_GET_VERSION of its head {} answered by DROP_NOTFOUND",
            short(&head)
        )
    })?;
    drop_link(link);
    let forged = forgeries(&Me::fresh(), &manifest);
    for (what, m) in &forged {
        let mut link = drops_link(ctx)?;
        link.conn.send_msg(
            &Message::Drop(DropMessage::Version(Box::new(m.clone()))),
            false,
        );
        link.conn
            .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
            .map_err(|e| format!("{what}, pushed: {e}"))?;
    }
    let mut link = drops_link(ctx)?;
    let heads = subscribe(&mut link.conn, drop, ctx)?.ok_or_else(|| {
        format!(
            "DROP_SUBSCRIBE after the forgeries: no DROP_HEADS within {}",
            span(ctx.wait)
        )
    })?;
    // Each forgery, had it been taken, would be a head: a child of a head replaces it, a
    // first version starts a branch of its own.
    for (what, m) in &forged {
        if heads.contains(&m.version_id()) {
            return Err(format!("{what} is among its heads afterwards").into());
        }
    }
    Ok(())
}

/// Ends a link the kit is done with.
fn drop_link(mut link: Link) {
    link.conn.shutdown();
}

/// The first version of a drop of the kit's own (`me` its primary, no file), signed.
fn first_version(me: &Me, nonce: [u8; 16]) -> DropManifest {
    let primary = me.public_key();
    let fields = ManifestFields {
        drop: DropId::derive(&primary, &nonce),
        nonce,
        counter: 1,
        parents: Vec::new(),
        owners: DropOwners {
            primary,
            secondary: Vec::new(),
        },
        root: RootHasher::new().root(),
        files: 0,
        bytes: 0,
    };
    DropManifest::sign_with(fields, primary, |bytes| me.identity.sign(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kits_own_version_verifies_and_its_forgeries_break_their_rules() {
        let owner = Me::fresh();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let first = first_version(&owner, nonce);
        assert_eq!(check_version(&first, &[]), Ok(first.version_id()));
        let kit = Me::fresh();
        let forged = forgeries(&kit, &first);
        assert_eq!(forged.len(), 4);
        let errors: Vec<_> = forged
            .iter()
            .map(|(_, m)| {
                let parents: Vec<&DropManifest> = if m.parents.is_empty() {
                    Vec::new()
                } else {
                    vec![&first]
                };
                check_version(m, &parents).map(|_| ())
            })
            .collect();
        use weft_engine::protocol::DropError::*;
        assert_eq!(
            errors,
            [
                Err(SignerNotOwner(first.version_id())),
                Err(BadSignature),
                Err(RootNotSignedByPrimary),
                Err(WrongDropId)
            ]
        );
    }

    #[test]
    fn drop_vectors_are_told_apart() {
        let (_, invalid) = vectors::load();
        let drops: Vec<&str> = invalid
            .iter()
            .filter(|v| is_drop_payload_vector(v))
            .map(|v| v.name.as_str())
            .collect();
        assert!(drops.contains(&"malformed_payload_drop_heads_too_many"));
        assert!(!drops.contains(&"unknown_command_drop_0x0508"));
        assert!(drops.iter().all(|n| n.contains("drop")), "{drops:?}");
        assert_eq!(drops.len(), 21, "{drops:?}");
    }
}
