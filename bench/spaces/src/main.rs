//! Spaces benchmarks: resolving a control log of 10,000 ops, and what one Megolm key rotation
//! costs a sender in a channel read by 100 and 1,000 member devices (CPU time and bytes on the
//! wire).
//!
//! Run: `cargo run --release -p dopus-bench-spaces -- [--ops 10000] [--devices 100,1000]`
//! Results go to stdout as Markdown tables; record them in docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary reports on stdout, progress on stderr"
)]

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use dopus_core::identity::PickleKey;
use dopus_core::identity::test_support::SeededRandom;
use dopus_core::space::megolm::{ChannelCrypto, DeviceAddr};
use dopus_core::space::test_support::KeySigner;
use dopus_core::space::{ControlLog, SpaceSigner, invite};
use dopus_core::store::MegolmOutboundRecord;
use dopus_proto::content::{ChatContent, Content};
use dopus_proto::peer::{
    Base64Bytes, Conversation, ENVELOPE_VERSION, MessageId, OlmMessageType, PAYLOAD_VERSION,
    PeerAddress, PeerEnvelope, PeerPayload, RecipientBinding, SenderBinding,
};
use dopus_proto::space::{
    ChannelKind, OpBody, Permissions, RoleId, SpaceOp, derive_channel_id, derive_role_id,
};
use dopus_types::{ChannelId, Curve25519Key, DeviceKeys, Timestamp};
use std::time::{Duration, Instant};
use vodozemac::olm::{Account, Session, SessionConfig};

#[derive(Parser, Debug)]
#[command(about = "DiscordOpus spaces benchmarks")]
struct Args {
    /// Ops in the control log to resolve.
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
    /// Members of the space in the resolution benchmark.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Replicas writing concurrently (forks merged every 50 ops).
    #[arg(long, default_value_t = 4)]
    forks: usize,
    /// Member device counts for the rotation benchmark.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    devices: Vec<usize>,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// xorshift64*: the same workload on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time of this process so far (user + system, 10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields after the command name: state is 0, utime is 11, stime is 12; 100 ticks a second.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A space with `members` members, roles and channels, and `ops` ops in all, written on
/// `forks` replicas that merge every 50 ops. Every op is allowed when written (the workload a
/// healthy space produces); concurrency makes some of them refused at resolution.
fn build_log(ops: usize, members: usize, forks: usize) -> Result<(SpaceOp, Vec<SpaceOp>)> {
    let owner = KeySigner::new(1, 0);
    let genesis = ControlLog::genesis_op(
        &owner,
        "bench space",
        [1; 16],
        Permissions::DEFAULT_EVERYONE,
        true,
        T0,
    );
    let mut log = ControlLog::create(genesis.clone())?;
    let space = *log.space();
    let people: Vec<KeySigner> = (2..=members as u64 + 1)
        .map(|u| KeySigner::new(u, 0))
        .collect();
    let mut rng_bytes = SeededRandom::new(7);
    for p in &people {
        let inv = invite::new_invite(
            space,
            owner.user(),
            &mut rng_bytes,
            Some(1),
            None,
            None,
            None,
        );
        log.author(&owner, inv.body, T0)?;
        let req = invite::join_request(&inv.code, &p.cert, T0);
        let sender = PeerAddress {
            user: p.user(),
            device: p.cert.device_id.clone(),
        };
        let body = invite::admit(log.state(), &owner.user(), &sender, &req, T0)
            .map_err(|e| anyhow!("admit: {e:?}"))?;
        log.author(&owner, body, T0)?;
    }
    let power = Permissions::KICK
        .union(Permissions::BAN)
        .union(Permissions::MANAGE_ROLES)
        .union(Permissions::MANAGE_CHANNELS)
        .union(Permissions::MANAGE_SPACE);
    let mut roles = Vec::new();
    for (i, position) in [40u32, 30, 20, 10, 5].into_iter().enumerate() {
        let o = log.author(
            &owner,
            OpBody::RoleCreate {
                name: format!("role {i}"),
                color: 0,
                position,
                permissions: if i < 3 {
                    power
                } else {
                    Permissions::MANAGE_MESSAGES
                },
            },
            T0,
        )?;
        roles.push(derive_role_id(&space, &o.id()));
    }
    // A tenth of the members are admins or moderators; they write most ops.
    let staff: Vec<&KeySigner> = people.iter().step_by(10).collect();
    for (i, s) in staff.iter().enumerate() {
        log.author(
            &owner,
            OpBody::RoleAssign {
                user: s.user(),
                role: roles[i % 3],
            },
            T0,
        )?;
    }
    let mut channels: Vec<ChannelId> = Vec::new();
    for i in 0..30 {
        let o = log.author(
            &owner,
            OpBody::ChannelCreate {
                kind: if i % 5 == 4 {
                    ChannelKind::Voice
                } else {
                    ChannelKind::Text
                },
                name: format!("channel {i}"),
                topic: None,
                parent: None,
                position: i,
                overwrites: vec![],
            },
            T0,
        )?;
        channels.push(derive_channel_id(&space, &o.id()));
    }
    let mut replicas: Vec<ControlLog> = (0..forks.max(1)).map(|_| log.clone()).collect();
    let mut rng = Rng(0x5eed);
    let mut written = log.len();
    let mut step = 0usize;
    while written < ops {
        let r = rng.below(replicas.len());
        let author = staff[rng.below(staff.len())];
        let body = match rng.below(6) {
            0 => OpBody::ChannelUpdate {
                channel: channels[rng.below(channels.len())],
                name: Some(format!("renamed {}", rng.below(10_000))),
                topic: None,
                overwrites: None,
            },
            1 => OpBody::ChannelUpdate {
                channel: channels[rng.below(channels.len())],
                name: None,
                topic: Some(format!("topic {}", rng.below(10_000))),
                overwrites: None,
            },
            2 => OpBody::RoleAssign {
                user: people[rng.below(people.len())].user(),
                role: roles[3 + rng.below(2)],
            },
            3 => OpBody::RoleRevoke {
                user: people[rng.below(people.len())].user(),
                role: roles[3 + rng.below(2)],
            },
            4 => OpBody::Update {
                name: Some(format!("bench space {}", rng.below(10_000))),
                description: None,
                share_history: None,
            },
            _ => OpBody::RoleUpdate {
                role: RoleId::EVERYONE,
                name: None,
                color: None,
                position: None,
                permissions: Some(Permissions::DEFAULT_EVERYONE),
            },
        };
        // Ops the rules refuse right now (a role the target already has, a rank conflict)
        // are skipped: the workload is what honest members write.
        if replicas[r].author(author, body, T0).is_ok() {
            written += 1;
            if written.is_multiple_of(2_000) {
                eprintln!("  … {written} ops written");
            }
        }
        step += 1;
        if step.is_multiple_of(50) {
            for a in 0..replicas.len() {
                for b in 0..replicas.len() {
                    if a == b {
                        continue;
                    }
                    let have = replicas[a].heads();
                    let missing: Vec<SpaceOp> = replicas[b]
                        .ops_for(&have, &[], usize::MAX)
                        .into_iter()
                        .cloned()
                        .collect();
                    for o in missing {
                        replicas[a].insert(o)?;
                    }
                }
            }
        }
    }
    let mut merged = replicas[0].clone();
    for rep in &replicas[1..] {
        let missing: Vec<SpaceOp> = rep
            .ops_for(&merged.heads(), &[], usize::MAX)
            .into_iter()
            .cloned()
            .collect();
        for o in missing {
            merged.insert(o)?;
        }
    }
    let mut ops_out: Vec<SpaceOp> = merged.ops().cloned().collect();
    let genesis = ops_out.remove(0);
    Ok((genesis, ops_out))
}

fn bench_resolution(args: &Args) -> Result<()> {
    println!("## Resolution of a control log\n");
    let t = Instant::now();
    let (genesis, ops) = build_log(args.ops, args.members, args.forks)?;
    let bytes: usize = ops
        .iter()
        .map(|o| o.to_json().map(|j| j.len()).unwrap_or(0))
        .sum();
    println!(
        "workload: {} ops (+ genesis), {} members, {} forks merged every 50 ops, {:.0} bytes per op as JSON; built in {:.1} s\n",
        ops.len(),
        args.members,
        args.forks,
        bytes as f64 / ops.len().max(1) as f64,
        t.elapsed().as_secs_f64()
    );
    let space = genesis
        .genesis_space_id()
        .context("the genesis op has a space id")?;
    let mut all = vec![genesis.clone()];
    all.extend(ops.iter().cloned());

    let mut insert = Vec::new();
    let mut load = Vec::new();
    let mut resolve = Vec::new();
    let mut append = Vec::new();
    let mut applied = 0;
    let mut heads = 0;
    for _ in 0..args.repeats {
        // Receiving every op: verify signatures and certificates, insert, then resolve once.
        let t = Instant::now();
        let mut log = ControlLog::create(genesis.clone())?;
        for o in &ops {
            log.insert(o.clone())?;
        }
        log.state();
        insert.push(t.elapsed());
        // Loading from the store: no signature checks, then a full resolution.
        let t = Instant::now();
        let mut log = ControlLog::from_stored(space, all.clone())?;
        load.push(t.elapsed());
        let t = Instant::now();
        log.state();
        resolve.push(t.elapsed());
        applied = log.trace().iter().filter(|(_, v)| v.is_ok()).count();
        heads = log.heads().len();
        // One more op on top of everything (the common case): applied to the cached state.
        let owner = KeySigner::new(1, 0);
        let t = Instant::now();
        log.author(
            &owner,
            OpBody::Update {
                name: Some("one more".into()),
                description: None,
                share_history: None,
            },
            T0,
        )?;
        log.state();
        append.push(t.elapsed());
    }
    println!(
        "{} ops applied, {} refused at resolution (concurrent conflicts); {} heads\n",
        applied,
        all.len() - applied,
        heads
    );
    println!("| step | median ms ({} runs) |", args.repeats);
    println!("| --- | --- |");
    println!(
        "| insert every op (verify + insert) and resolve once | {} |",
        ms(median(insert))
    );
    println!(
        "| load from the store (no signature checks) | {} |",
        ms(median(load))
    );
    println!(
        "| full resolution from the genesis op | {} |",
        ms(median(resolve))
    );
    println!(
        "| author one more op on top (cached state) | {} |",
        ms(median(append))
    );
    println!();
    Ok(())
}

/// A receiving device: an Olm account whose session we hold.
struct Receiver {
    addr: DeviceAddr,
    keys: DeviceKeys,
}

fn curve(k: vodozemac::Curve25519PublicKey) -> Curve25519Key {
    Curve25519Key::from_bytes(k.to_bytes())
}

fn bench_rotation(args: &Args, devices: usize) -> Result<()> {
    let owner = KeySigner::new(1, 0);
    let crypto = ChannelCrypto::new(&PickleKey::from_bytes([3; 32]));
    let sender_account = Account::new();
    let space = dopus_types::SpaceId::from_bytes([5; 32]);
    let channel = ChannelId::from_bytes([6; 16]);
    // Setup, not timed: one Olm session to each device.
    let mut receivers = Vec::with_capacity(devices);
    let mut sessions: Vec<Session> = Vec::with_capacity(devices);
    for i in 0..devices {
        let signer = KeySigner::new(1000 + i as u64, 0);
        let mut acct = Account::new();
        acct.generate_one_time_keys(1);
        let otk = *acct
            .one_time_keys()
            .values()
            .next()
            .context("an account has a one-time key")?;
        let ids = acct.identity_keys();
        let session = sender_account.create_outbound_session(
            SessionConfig::version_1(),
            ids.curve25519,
            otk,
        )?;
        sessions.push(session);
        receivers.push(Receiver {
            addr: (signer.user(), signer.cert.device_id.clone()),
            keys: DeviceKeys {
                ed25519: signer.cert.keys.ed25519,
                curve25519: curve(ids.curve25519),
            },
        });
    }
    let audience: Vec<DeviceAddr> = receivers.iter().map(|r| r.addr.clone()).collect();
    // The session before the removal was shared with one more device, which is now gone.
    let removed = KeySigner::new(999, 0);
    let mut shared_with = audience.clone();
    shared_with.push((removed.user(), removed.cert.device_id.clone()));
    shared_with.sort();
    let first = crypto.prepare(&owner, space, channel, None, &audience, false, T0)?;
    let current = MegolmOutboundRecord {
        shared_with,
        ..first.outbound
    };
    let me = owner.certificate().clone();
    let sender_binding = SenderBinding {
        user: me.user_id,
        device: me.device_id.clone(),
        keys: DeviceKeys {
            ed25519: me.keys.ed25519,
            curve25519: curve(sender_account.curve25519_key()),
        },
    };

    let mut prepare_t = Vec::new();
    let mut seal_t = Vec::new();
    let cpu_start = cpu_time();
    let mut total_bytes = 0usize;
    let mut payload_bytes = 0usize;
    for round in 0..args.repeats {
        let t = Instant::now();
        let prepared =
            crypto.prepare(&owner, space, channel, Some(&current), &audience, false, T0)?;
        prepare_t.push(t.elapsed());
        if prepared.shares.len() != devices {
            return Err(anyhow!(
                "expected {devices} shares, got {}",
                prepared.shares.len()
            ));
        }
        // One Olm message per device: the room key inside a peer payload, in an envelope.
        let t = Instant::now();
        let mut bytes = 0usize;
        let mut plain = 0usize;
        for (i, share) in prepared.shares.iter().enumerate() {
            let r = &receivers[i];
            let payload = PeerPayload {
                version: PAYLOAD_VERSION,
                id: MessageId::new_v7(T0, [i as u8; 10]),
                sender: sender_binding.clone(),
                recipient: RecipientBinding {
                    user: r.addr.0,
                    device: r.addr.1.clone(),
                    ed25519: r.keys.ed25519,
                },
                certificate: None,
                conversation: Conversation::Direct,
                sent_at: T0,
                content: Content::Chat(ChatContent::Typing { active: false }),
            };
            // The space content in the place the lead's `Content::Space` will put it.
            let mut v = serde_json::to_value(&payload)?;
            v["content"] = serde_json::to_value(&share.content)?;
            let json = serde_json::to_vec(&v)?;
            plain += json.len();
            let msg = sessions[i].encrypt(&json)?;
            let (kind, ct) = msg.to_parts();
            let env = PeerEnvelope {
                version: ENVELOPE_VERSION,
                id: payload.id,
                from: PeerAddress {
                    user: me.user_id,
                    device: me.device_id.clone(),
                },
                to: PeerAddress {
                    user: r.addr.0,
                    device: r.addr.1.clone(),
                },
                olm_type: OlmMessageType::from_number(kind).context("olm type")?,
                ciphertext: Base64Bytes(ct),
            };
            bytes += env.to_json()?.len();
        }
        seal_t.push(t.elapsed());
        if round == 0 {
            total_bytes = bytes;
            payload_bytes = plain;
        }
    }
    // CPU time has a 10 ms resolution: averaged over every round.
    let cpu =
        cpu_time().saturating_sub(cpu_start) / u32::try_from(args.repeats.max(1)).unwrap_or(1);
    let p = median(prepare_t);
    let s = median(seal_t);
    println!(
        "| {devices} | {} | {} | {} | {} | {:.2} MB ({} B each; {} B of plaintext each) |",
        ms(p),
        ms(s),
        ms(p + s),
        ms(cpu),
        total_bytes as f64 / 1e6,
        total_bytes / devices,
        payload_bytes / devices
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("load average at start: {}", load_average());
    println!(
        "spaces benchmark (release build expected), {} repeats, medians\n",
        args.repeats
    );
    bench_resolution(&args)?;
    println!("## Megolm key rotation after a reader is removed\n");
    println!(
        "A new outbound session, its announcement, and one room key per remaining device, each Olm-encrypted into a peer envelope (the Olm sessions exist already).\n"
    );
    println!(
        "| member devices | prepare ms | seal all shares ms | total ms | CPU ms (mean) | bytes on the wire |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for &d in &args.devices {
        bench_rotation(&args, d)?;
    }
    println!("\nload average at end: {}", load_average());
    Ok(())
}
