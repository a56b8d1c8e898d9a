// The call bar above the app: an incoming call rings here (accept / decline), an outgoing one
// shows "Calling…" with cancel, and an active one shows its duration, mute, deafen, camera,
// screen share, hang up, the devices and the connection (path and RTT from the node, bit rates,
// jitter and concealment from the browser leg's getStats). Below the bar, the video stage: the
// peer's camera or screen large, our own preview small.
import { useEffect, useRef, useState } from "react";
import { formatDuration, liveDuration, pathLabel, phaseOf } from "../lib/calls";
import { useCalls } from "../state/calls";
import { useStore } from "../state/store";
import { Avatar } from "./Avatar";
import { Icon } from "./Icon";
import "./calls.css";

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [active]);
  return now;
}

function DeviceSelect({
  label,
  devices,
  value,
  onChange,
  testId,
}: {
  label: string;
  devices: MediaDeviceInfo[];
  value: string;
  onChange(id: string): void;
  testId: string;
}) {
  return (
    <label className="call-device">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId} disabled={devices.length === 0}>
        <option value="">Default</option>
        {devices
          .filter((d) => d.deviceId && d.deviceId !== "default")
          .map((d, i) => (
            <option key={d.deviceId} value={d.deviceId}>
              {d.label || `${label} ${i + 1}`}
            </option>
          ))}
      </select>
    </label>
  );
}

/** A `<video>` showing `stream`, muted (the call's audio plays on its own element). */
function StreamVideo({ stream, className, testId }: { stream: MediaStream; className: string; testId: string }) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const v = ref.current;
    if (!v) return;
    v.srcObject = stream;
    void v.play().catch(() => undefined);
  }, [stream]);
  return <video ref={ref} className={className} autoPlay playsInline muted data-testid={testId} />;
}

/** Whether the peer's video shows frames: a frame within the last 1.5 s (the m-line stays when
 * their camera is off, so the track alone does not say it). */
function useVideoLive(stream: MediaStream | null): boolean {
  const [live, setLive] = useState(false);
  useEffect(() => {
    const track = stream?.getVideoTracks()[0];
    if (!track) return;
    let last = 0;
    let frames = -1;
    const probe = document.createElement("video");
    probe.muted = true;
    probe.srcObject = stream;
    void probe.play().catch(() => undefined);
    const t = setInterval(() => {
      const q = probe.getVideoPlaybackQuality?.();
      const n = q ? q.totalVideoFrames : probe.currentTime;
      if (n !== frames) {
        frames = n;
        last = Date.now();
      }
      setLive(Date.now() - last < 1500 && probe.videoWidth > 0);
    }, 500);
    return () => {
      clearInterval(t);
      probe.srcObject = null;
      setLive(false);
    };
  }, [stream]);
  return live;
}

function VideoStage() {
  const calls = useCalls();
  const remoteLive = useVideoLive(calls.remoteVideo);
  const local = calls.localVideo;
  if (!remoteLive && !local) return null;
  return (
    <div className="call-stage" data-testid="call-stage">
      {remoteLive && calls.remoteVideo && <StreamVideo stream={calls.remoteVideo} className="call-remote-video" testId="call-remote-video" />}
      {!remoteLive && <div className="call-remote-none muted">Their camera is off</div>}
      {local && (
        <StreamVideo stream={local} className={`call-local-video ${calls.screenOn ? "screen" : ""}`} testId="call-local-video" />
      )}
    </div>
  );
}

export function CallPanel() {
  const calls = useCalls();
  const { state, actions } = useStore();
  const { call } = calls;
  const [showDevices, setShowDevices] = useState(false);
  const now = useNow(!!call && call.state === "active");
  if (!call) return null;
  const contact = state.contacts[call.user_id];
  const name = contact?.display_name || "Someone";
  const phase = phaseOf(call);
  const f = calls.figures;

  if (phase === "incoming") {
    return (
      <div className="call-bar call-incoming" role="alertdialog" aria-label={`${name} is calling`} data-testid="call-incoming">
        <Avatar id={call.user_id} name={name} size={36} image={contact?.profile?.avatar ?? null} />
        <div className="call-who">
          <strong>{name}</strong>
          <span className="muted">Incoming call…</span>
        </div>
        <span className="spacer" />
        <button className="call-btn call-accept" onClick={() => void calls.accept()} data-testid="call-accept">
          <Icon name="phone" /> Accept
        </button>
        <button className="call-btn call-hangup" onClick={() => void calls.decline()} data-testid="call-decline">
          <Icon name="phone-off" /> Decline
        </button>
      </div>
    );
  }

  return (
    <>
    <div className={`call-bar call-${phase}`} role="region" aria-label={`Call with ${name}`} data-testid="call-panel" data-phase={phase}>
      <button className="call-who-btn" onClick={() => actions.open(call.user_id)} title="Open the conversation">
        <Avatar id={call.user_id} name={name} size={36} image={contact?.profile?.avatar ?? null} />
        <div className="call-who">
          <strong>{name}</strong>
          {phase === "outgoing" ? (
            <span className="muted" data-testid="call-status">
              Calling…
            </span>
          ) : (
            <span className="muted" data-testid="call-status">
              <span data-testid="call-duration">{formatDuration(liveDuration(call, calls.readAt, now))}</span>
              {" · "}
              {calls.leg === "connected" ? "Voice connected" : calls.leg === "failed" ? "Audio failed" : "Connecting audio…"}
            </span>
          )}
        </div>
      </button>
      {phase === "active" && (
        <div className="call-stats" data-testid="call-stats">
          <span title="How the call travels between your node and theirs">{pathLabel(call)}</span>
          {call.connection.rtt_ms !== null && <span>RTT {Math.round(call.connection.rtt_ms)} ms</span>}
          {f && (
            <>
              <span title="Received / sent audio bit rate">
                ↓ {f.inKbps.toFixed(0)} · ↑ {f.outKbps.toFixed(0)} kbit/s
              </span>
              {f.concealedPct !== null && (
                <span title="Share of the received audio the browser had to conceal (lost or late packets)">
                  loss {f.concealedPct.toFixed(1)} %
                </span>
              )}
              {f.jitterMs !== null && <span>jitter {f.jitterMs.toFixed(0)} ms</span>}
            </>
          )}
        </div>
      )}
      <span className="spacer" />
      {calls.mediaError && (
        <span className="call-error" role="alert">
          {calls.mediaError}
        </span>
      )}
      <button
        className={`call-btn icon ${calls.muted ? "on" : ""}`}
        aria-pressed={calls.muted}
        aria-label={calls.muted ? "Unmute" : "Mute"}
        title={calls.muted ? "Unmute" : "Mute (stop sending your microphone)"}
        onClick={() => calls.setMuted(!calls.muted)}
        data-testid="call-mute"
      >
        <Icon name={calls.muted ? "mic-off" : "mic"} />
      </button>
      <button
        className={`call-btn icon ${calls.deafened ? "on" : ""}`}
        aria-pressed={calls.deafened}
        aria-label={calls.deafened ? "Undeafen" : "Deafen"}
        title={calls.deafened ? "Undeafen" : "Deafen (hear nothing, send nothing)"}
        onClick={() => calls.setDeafened(!calls.deafened)}
        data-testid="call-deafen"
      >
        <Icon name={calls.deafened ? "headphones-off" : "headphones"} />
      </button>
      <button
        className={`call-btn icon ${calls.cameraOn ? "on-video" : ""}`}
        aria-pressed={calls.cameraOn}
        aria-label={calls.cameraOn ? "Turn camera off" : "Turn camera on"}
        title={calls.cameraOn ? "Turn camera off" : "Turn camera on"}
        onClick={() => calls.setCameraOn(!calls.cameraOn)}
        disabled={calls.leg === "none"}
        data-testid="call-camera"
      >
        <Icon name={calls.cameraOn ? "video" : "video-off"} />
      </button>
      <button
        className={`call-btn icon ${calls.screenOn ? "on-video" : ""}`}
        aria-pressed={calls.screenOn}
        aria-label={calls.screenOn ? "Stop sharing your screen" : "Share your screen"}
        title={calls.screenOn ? "Stop sharing your screen" : "Share your screen (replaces your camera while it lasts)"}
        onClick={() => calls.setScreenOn(!calls.screenOn)}
        disabled={calls.leg === "none" || !navigator.mediaDevices?.getDisplayMedia}
        data-testid="call-screen"
      >
        <Icon name="screen" />
      </button>
      <button
        className="call-btn icon"
        aria-expanded={showDevices}
        aria-label="Devices"
        title="Microphone, speaker and camera"
        onClick={() => setShowDevices((s) => !s)}
        data-testid="call-devices"
      >
        <Icon name="settings" />
      </button>
      <button className="call-btn call-hangup" onClick={() => void calls.hangup()} data-testid="call-hangup">
        <Icon name="phone-off" /> {phase === "outgoing" ? "Cancel" : "Hang up"}
      </button>
      {showDevices && (
        <div className="call-devices" role="group" aria-label="Devices">
          <DeviceSelect label="Microphone" devices={calls.devices.mics} value={calls.mic} onChange={calls.setMic} testId="device-mic" />
          <DeviceSelect label="Speaker" devices={calls.devices.speakers} value={calls.speaker} onChange={calls.setSpeaker} testId="device-speaker" />
          <DeviceSelect label="Camera" devices={calls.devices.cameras} value={calls.camera} onChange={calls.setCamera} testId="device-camera" />
        </div>
      )}
    </div>
    {phase === "active" && <VideoStage />}
    </>
  );
}
