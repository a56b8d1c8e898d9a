// Voice channels on screen. `VoiceChannelMembers` lists who is in a voice channel under its
// entry in the channel list (a ring while they speak, muted/deafened marks). `VoicePanel` is the
// bar beside the call bar while we are in a channel: the channel, the leg's state, mute,
// deafen, leave, push-to-talk (key configurable), the participants with a volume each, and
// any error (a missing `connect` or `speak` permission says so).
import { useEffect, useState } from "react";
import type { VoiceParticipant } from "../api/types";
import { channelOf, keyLabel } from "../lib/voice";
import { useStore } from "../state/store";
import { useVoice } from "../state/voice";
import "./voice.css";

function shortUser(id: string): string {
  return id.length > 14 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
}

function useName(): (id: string) => string {
  const { state } = useStore();
  return (id) => (id === state.me?.user_id ? (state.me?.display_name ?? "You") : state.contacts[id]?.display_name || shortUser(id));
}

function Marks({ p }: { p: VoiceParticipant }) {
  return (
    <>
      {p.deafened ? (
        <span className="voice-mark" title="Deafened" aria-label="deafened">
          🔇
        </span>
      ) : p.muted ? (
        <span className="voice-mark" title="Muted" aria-label="muted">
          🎙̸
        </span>
      ) : null}
      {!p.may_speak && (
        <span className="voice-mark" title="May not speak here" aria-label="may not speak">
          ⊘
        </span>
      )}
    </>
  );
}

/** Who is in a voice channel, under its entry in the channel list. */
export function VoiceChannelMembers({ spaceId, channelId }: { spaceId: string; channelId: string }) {
  const voice = useVoice();
  const name = useName();
  const c = channelOf(voice.roster, spaceId, channelId);
  if (!c || c.participants.length === 0) return null;
  return (
    <ul className="voice-members" data-testid="voice-members" data-channel={channelId}>
      {c.participants.map((p) => {
        const speaking = voice.speaking.has(p.user_id) || (!voice.current && p.speaking);
        return (
          <li key={p.user_id} className={`voice-member ${speaking ? "speaking" : ""}`} data-user-id={p.user_id} data-speaking={speaking}>
            <span className="voice-dot" aria-hidden="true" />
            <span className="voice-name">{name(p.user_id)}</span>
            <Marks p={p} />
          </li>
        );
      })}
    </ul>
  );
}

function PttSettings() {
  const voice = useVoice();
  const [capturing, setCapturing] = useState(false);
  useEffect(() => {
    if (!capturing) return;
    const take = (e: KeyboardEvent) => {
      e.preventDefault();
      if (e.code !== "Escape" && /^[A-Za-z0-9]{1,24}$/.test(e.code)) voice.setPtt({ ...voice.ptt, key: e.code });
      setCapturing(false);
    };
    window.addEventListener("keydown", take, { once: true });
    return () => window.removeEventListener("keydown", take);
  }, [capturing, voice]);
  return (
    <div className="voice-settings" data-testid="voice-settings">
      <label>
        <input
          type="checkbox"
          checked={voice.ptt.enabled}
          onChange={(e) => voice.setPtt({ ...voice.ptt, enabled: e.target.checked })}
          data-testid="voice-ptt-enabled"
        />{" "}
        Push to talk
      </label>
      <button className="voice-btn" onClick={() => setCapturing(true)} data-testid="voice-ptt-key">
        {capturing ? "Press a key…" : `Key: ${keyLabel(voice.ptt.key)}`}
      </button>
    </div>
  );
}

/** The voice bar while we are in a channel. */
export function VoicePanel() {
  const voice = useVoice();
  const name = useName();
  const [settings, setSettings] = useState(false);
  const { current } = voice;
  if (!current) {
    return voice.error ? (
      <div className="voice-bar voice-error-only" role="alert" data-testid="voice-error">
        {voice.error}
      </div>
    ) : null;
  }
  const c = channelOf(voice.roster, current.space_id, current.channel_id);
  const me = c?.participants.find((p) => p.me);
  const listening = voice.ptt.enabled && !current.muted && !current.deafened;
  return (
    <section className="voice-bar" aria-label="Voice channel" data-testid="voice-panel" data-leg={voice.leg}>
      <div className="voice-head">
        <span className={`voice-dot ${me && voice.speaking.has(me.user_id) ? "speaking" : ""}`} data-testid="voice-self-speaking" data-speaking={!!me && voice.speaking.has(me.user_id)} />
        <strong data-testid="voice-channel-name">🔊 {c?.name ?? "Voice"}</strong>
        <span className="muted voice-leg">{voice.leg === "connected" ? "Voice connected" : voice.leg === "failed" ? "Voice failed" : "Connecting…"}</span>
        <span className="spacer" />
        <button
          className={`voice-btn ${current.muted ? "on" : ""}`}
          aria-pressed={current.muted}
          onClick={() => void voice.setMuted(!current.muted)}
          data-testid="voice-mute"
          title={current.muted ? "Unmute" : "Mute"}
        >
          {current.muted ? "Unmute" : "Mute"}
        </button>
        <button
          className={`voice-btn ${current.deafened ? "on" : ""}`}
          aria-pressed={current.deafened}
          onClick={() => void voice.setDeafened(!current.deafened)}
          data-testid="voice-deafen"
          title={current.deafened ? "Undeafen" : "Deafen"}
        >
          {current.deafened ? "Undeafen" : "Deafen"}
        </button>
        <button className="voice-btn" aria-expanded={settings} onClick={() => setSettings((s) => !s)} data-testid="voice-settings-toggle" title="Voice settings">
          ⚙
        </button>
        <button className="voice-btn voice-leave" onClick={() => void voice.leave()} data-testid="voice-leave">
          Leave
        </button>
      </div>
      {listening && (
        <p className="muted voice-ptt" data-testid="voice-ptt" data-held={voice.pttHeld}>
          {voice.pttHeld ? "Talking…" : `Hold ${keyLabel(voice.ptt.key)} to talk`}
        </p>
      )}
      {settings && <PttSettings />}
      {(voice.error || voice.note) && (
        <p className="voice-error" role="alert" data-testid="voice-error">
          {voice.error ?? voice.note}
        </p>
      )}
      <ul className="voice-peers">
        {(c?.participants ?? [])
          .filter((p) => !p.me)
          .map((p) => (
            <li key={p.user_id} className={`voice-peer ${voice.speaking.has(p.user_id) ? "speaking" : ""}`} data-user-id={p.user_id} data-testid="voice-peer" data-speaking={voice.speaking.has(p.user_id)}>
              <span className="voice-dot" aria-hidden="true" />
              <span className="voice-name">{name(p.user_id)}</span>
              <Marks p={p} />
              <label className="voice-volume">
                <span className="sr-only">Volume of {name(p.user_id)}</span>
                <input
                  type="range"
                  min={0}
                  max={100}
                  value={voice.volumes[p.user_id] ?? 100}
                  onChange={(e) => voice.setVolume(p.user_id, Number(e.target.value))}
                  data-testid="voice-volume"
                  aria-label={`Volume of ${name(p.user_id)}`}
                />
              </label>
            </li>
          ))}
      </ul>
    </section>
  );
}
