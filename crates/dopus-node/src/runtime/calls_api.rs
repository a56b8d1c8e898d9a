//! The node's call operations for the API: list, get, ring, pick up, decline, hang up
//! (docs/api.md, "Calls").

use super::calls::{FileSink, FileSource, MediaSink, MediaSource};
use super::{Node, NodeError, NodeResult};
use crate::api::dto;
use dopus_types::{CallId, UserId};
use std::path::PathBuf;

fn call_id(id: &str) -> NodeResult<CallId> {
    CallId::parse(id).map_err(|_| NodeError::Invalid("invalid call id".into()))
}

/// The headless source and sink from the request's paths (read and created before the call
/// is placed, so a bad path is a clear error and no call).
async fn media(
    play: Option<String>,
    record: Option<String>,
) -> NodeResult<(
    Option<Box<dyn MediaSource>>,
    Option<(Box<dyn MediaSink>, String)>,
)> {
    for p in play.iter().chain(&record) {
        if !PathBuf::from(p).is_absolute() {
            return Err(NodeError::Invalid(
                "play and record must be absolute paths".into(),
            ));
        }
    }
    tokio::task::spawn_blocking(move || {
        let source = match play {
            Some(p) => Some(Box::new(
                FileSource::open(&PathBuf::from(p)).map_err(NodeError::Invalid)?,
            ) as Box<dyn MediaSource>),
            None => None,
        };
        let sink = match record {
            Some(p) => {
                let serial = u32::from_le_bytes(rand_bytes());
                let sink =
                    FileSink::create(&PathBuf::from(&p), serial).map_err(NodeError::Invalid)?;
                Some((Box::new(sink) as Box<dyn MediaSink>, p))
            }
            None => None,
        };
        Ok((source, sink))
    })
    .await
    .map_err(|e| NodeError::Internal(e.to_string().into()))?
}

fn rand_bytes() -> [u8; 4] {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b
}

impl Node {
    /// `GET /calls`.
    pub async fn calls(&self) -> NodeResult<dto::Calls> {
        self.read(|v| {
            let now = crate::account::now();
            Ok(dto::Calls {
                calls: v
                    .machine
                    .calls()
                    .iter()
                    .map(|c| super::views::call(v.machine, c, v.live, now))
                    .collect(),
            })
        })
        .await
    }

    /// `GET /calls/{id}`.
    pub async fn call(&self, id: &str) -> NodeResult<dto::Call> {
        let id = call_id(id)?;
        self.read(move |v| {
            let c = v.machine.call(&id).ok_or(NodeError::NotFound("call"))?;
            Ok(super::views::call(
                v.machine,
                &c,
                v.live,
                crate::account::now(),
            ))
        })
        .await
    }

    /// `POST /calls`: rings a contact, with an optional file to play and one to record into.
    pub async fn start_call(&self, req: dto::StartCall) -> NodeResult<dto::Call> {
        let peer = UserId::parse(&req.user_id.0)
            .map_err(|_| NodeError::Invalid("invalid user id".into()))?;
        let (source, sink) = media(req.play, req.record).await?;
        self.write(move |cx| {
            let c = cx
                .machine
                .start_call(cx.now, peer, cx.store)
                .map_err(|e| cx.command(e))?;
            if let Some(s) = source {
                cx.live.calls.set_source(c.id, s);
            }
            if let Some((k, path)) = sink {
                cx.live.calls.set_sink(c.id, k, path);
            }
            Ok(super::views::call(cx.machine, &c, cx.live, cx.now))
        })
        .await
    }

    /// `POST /calls/{id}/accept`.
    pub async fn accept_call(&self, id: &str, req: dto::AcceptCall) -> NodeResult<dto::Call> {
        let id = call_id(id)?;
        let (source, sink) = media(req.play, req.record).await?;
        self.write(move |cx| {
            let c = cx
                .machine
                .accept_call(cx.now, &id)
                .map_err(|e| cx.command(e))?;
            if let Some(s) = source {
                cx.live.calls.set_source(c.id, s);
            }
            if let Some((k, path)) = sink {
                cx.live.calls.set_sink(c.id, k, path);
            }
            Ok(super::views::call(cx.machine, &c, cx.live, cx.now))
        })
        .await
    }

    /// `POST /calls/{id}/decline`, `POST /calls/{id}/hangup`.
    pub async fn call_action(&self, id: &str, action: dto::CallAction) -> NodeResult<dto::Call> {
        let id = call_id(id)?;
        self.write(move |cx| {
            let c = match action {
                dto::CallAction::Decline => cx.machine.decline_call(cx.now, &id, cx.store),
                dto::CallAction::Hangup => cx.machine.hang_up(cx.now, &id, cx.store),
            }
            .map_err(|e| cx.command(e))?;
            Ok(super::views::call(cx.machine, &c, cx.live, cx.now))
        })
        .await
    }
}
