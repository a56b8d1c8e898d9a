//! The CLI's side of the local API: finds the running node through `api.json` and calls it.

use crate::apifile::ApiFile;
use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A connection to a running node's local API.
#[derive(Debug)]
pub struct ApiClient {
    file: ApiFile,
    agent: ureq::Agent,
}

impl ApiClient {
    /// Finds the node running on `data_dir`, if any answers.
    pub fn find(data_dir: &Path) -> Option<ApiClient> {
        let file = ApiFile::read(data_dir)?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let client = ApiClient { file, agent };
        client.get("/api/v1/status").ok().map(|_| client)
    }

    /// Like [`ApiClient::find`], but an error that says how to start a node.
    pub fn require(data_dir: &Path) -> anyhow::Result<ApiClient> {
        Self::find(data_dir).ok_or_else(|| {
            anyhow!(
                "no running node for {}: start one with `discordopus run --server URL` \
                 (or `discordopus up`)",
                data_dir.display()
            )
        })
    }

    /// Base URL of the API, e.g. for the events WebSocket.
    pub fn base_url(&self) -> &str {
        &self.file.url
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.file.token
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.file.url))
            .header("Authorization", format!("Bearer {}", self.file.token))
            .call()
            .context("the node's API did not answer")?;
        Self::decode(resp)
    }

    pub fn send<B: Serialize>(&self, method: &str, path: &str, body: &B) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.file.url);
        let auth = format!("Bearer {}", self.file.token);
        let resp = match method {
            "POST" => self
                .agent
                .post(url)
                .header("Authorization", auth)
                .send_json(body),
            "PUT" => self
                .agent
                .put(url)
                .header("Authorization", auth)
                .send_json(body),
            "PATCH" => self
                .agent
                .patch(url)
                .header("Authorization", auth)
                .send_json(body),
            "DELETE" => self.agent.delete(url).header("Authorization", auth).call(),
            other => bail!("unsupported method {other}"),
        }
        .context("the node's API did not answer")?;
        Self::decode(resp)
    }

    fn decode(mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the node's answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .context("the node answered with something that is not JSON")?
        };
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("request failed");
            let code = value["error"]["code"].as_str().unwrap_or("error");
            bail!("{message} ({code})")
        }
    }
}
