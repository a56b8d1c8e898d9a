// Discord-flavoured markdown: a parser built from simple-markdown's rules (the library Discord's
// own client grew from), producing a small typed tree that components/RichText.tsx turns into
// React elements. Message text is never treated as HTML: the tree holds strings, React escapes
// them, and links keep only http(s)/mailto targets.
//
// Syntax (as Discord): **bold**, *italic* / _italic_, __underline__, ~~strike~~, ||spoiler||,
// `code`, ```lang fenced code```, "> quote" lines and ">>> rest-of-message" quotes, "# " to "### "
// headings and "-# " subtext at a line start, "- " / "* " / "1. " lists, bare URLs, <url>
// autolinks, [masked](https://links) (shown with their real target), \escapes.
import SimpleMarkdown, { type ParserRule, type SingleASTNode, type State } from "@khanacademy/simple-markdown";

export type MdNode =
  | { type: "text"; content: string }
  | { type: "br" }
  | { type: "strong" | "em" | "u" | "del" | "spoiler"; content: MdNode[] }
  | { type: "inlineCode"; content: string }
  | { type: "codeBlock"; lang: string | null; content: string }
  | { type: "blockQuote"; content: MdNode[] }
  | { type: "heading"; level: 1 | 2 | 3; content: MdNode[] }
  | { type: "subtext"; content: MdNode[] }
  | { type: "list"; ordered: boolean; start: number; items: MdNode[][] }
  /** `href` is a checked http(s) or mailto URL; `masked` when the text differs from the target. */
  | { type: "link"; href: string; content: MdNode[]; masked: boolean };

const SM = SimpleMarkdown;
const d = SM.defaultRules;

/** Whether the parser stands at the start of a line (block syntax only counts there). */
function atLineStart(state: State, prevCapture: string): boolean {
  return !state.inQuote && !state.inList && (prevCapture === "" || prevCapture.endsWith("\n"));
}

function lineStart(regex: RegExp): ParserRule["match"] {
  const match = (source: string, state: State, prevCapture: string) =>
    atLineStart(state, prevCapture) ? regex.exec(source) : null;
  return Object.assign(match, { regex });
}

const inline = (parse: (s: string, st: State) => SingleASTNode[], content: string, state: State) => {
  const wasInline = state.inline;
  state.inline = true;
  const out = parse(content, state);
  state.inline = wasInline;
  return out;
};

/** Rules in the order they are tried; the last one (text) matches anything. */
let order = 0;
const rules: Record<string, ParserRule> = {
  codeBlock: {
    order: order++,
    // ```lang\ncode``` (the language line is optional; Discord needs the newline after it).
    match: SM.anyScopeRegex(/^```(?:([A-Za-z0-9_+#.-]+)\n)?\n?([\s\S]*?[^`][\s\S]*?)\n?```/),
    parse: (c) => ({ lang: c[1] ? c[1].toLowerCase() : null, content: c[2] ?? "" }),
  },
  blockQuote: {
    order: order++,
    // ">>> " quotes the rest of the message; "> " quotes consecutive lines.
    match: lineStart(/^(?: *>>> ?([\s\S]*)| *> [^\n]*(?:\n *> [^\n]*)*\n?)/),
    parse: (c, parse, state) => {
      const body = c[1] !== undefined ? c[1] : (c[0] ?? "").replace(/^ *> ?/gm, "").replace(/\n$/, "");
      state.inQuote = true;
      const content = inline(parse, body, state);
      state.inQuote = false;
      return { content };
    },
  },
  heading: {
    order: order++,
    match: lineStart(/^(#{1,3}) +([^\n]+?) *(?:\n|$)/),
    parse: (c, parse, state) => ({ level: c[1]!.length, content: inline(parse, c[2]!, state) }),
  },
  subtext: {
    order: order++,
    match: lineStart(/^-# +([^\n]+?) *(?:\n|$)/),
    parse: (c, parse, state) => ({ content: inline(parse, c[1]!, state) }),
  },
  list: {
    order: order++,
    match: lineStart(/^(?:(?:[-*]|\d{1,9}\.) +[^\n]+(?:\n|$))+/),
    parse: (c, parse, state) => {
      const lines = (c[0] ?? "").replace(/\n$/, "").split("\n");
      const first = /^(\d+)\./.exec(lines[0]!);
      state.inList = true;
      const items = lines.map((l) => inline(parse, l.replace(/^(?:[-*]|\d+\.) +/, ""), state));
      state.inList = false;
      return { ordered: first !== null, start: first ? Number(first[1]) : 1, items };
    },
  },
  newline: {
    order: order++,
    match: SM.anyScopeRegex(/^\n/),
    parse: () => ({ type: "br" }),
  },
  escape: { ...d.escape, order: order++ },
  autolink: { ...d.autolink, order: order++ },
  url: { ...d.url, order: order++ },
  link: {
    ...d.link,
    order: order++,
    parse: (c, parse, state) => ({ content: parse(c[1]!, state), target: SM.unescapeUrl(c[2] ?? ""), masked: true }),
  },
  spoiler: {
    order: order,
    match: SM.inlineRegex(/^\|\|([\s\S]+?)\|\|/),
    parse: (c, parse, state) => ({ content: parse(c[1]!, state) }),
  },
  em: { ...d.em, order: order },
  strong: { ...d.strong, order: order },
  u: { ...d.u, order: order++ },
  del: { ...d.del, order: order++ },
  inlineCode: { ...d.inlineCode, order: order++ },
  text: {
    ...d.text,
    order: order++,
    // As simple-markdown's text rule, but a newline always ends a text run (it is a line break).
    match: SM.anyScopeRegex(/^[\s\S]+?(?=[^0-9A-Za-z\s\u00c0-\uffff]|\n|\w+:\S|$)/),
  },
};

const rawParse = SM.parserFor(rules, { inline: true });

/** Only these schemes become links; anything else (javascript:, data:, file:) stays text. */
export function safeHref(target: string): string | null {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" || url.protocol === "mailto:" ? url.href : null;
}

function plain(nodes: readonly SingleASTNode[]): string {
  return nodes.map((n) => (typeof n.content === "string" ? n.content : Array.isArray(n.content) ? plain(n.content) : "")).join("");
}

function convert(nodes: readonly SingleASTNode[]): MdNode[] {
  const out: MdNode[] = [];
  const push = (n: MdNode) => {
    const last = out[out.length - 1];
    if (n.type === "text" && last?.type === "text") last.content += n.content;
    else out.push(n);
  };
  for (const n of nodes) {
    switch (n.type) {
      case "text":
        push({ type: "text", content: String(n.content) });
        break;
      case "br":
        out.push({ type: "br" });
        break;
      case "strong":
      case "em":
      case "u":
      case "del":
      case "spoiler":
      case "blockQuote":
      case "subtext":
        out.push({ type: n.type, content: convert(n.content as SingleASTNode[]) });
        break;
      case "heading":
        out.push({ type: "heading", level: Math.min(3, Math.max(1, Number(n.level))) as 1 | 2 | 3, content: convert(n.content) });
        break;
      case "inlineCode":
        out.push({ type: "inlineCode", content: String(n.content) });
        break;
      case "codeBlock":
        out.push({ type: "codeBlock", lang: n.lang ?? null, content: String(n.content) });
        break;
      case "list":
        out.push({ type: "list", ordered: !!n.ordered, start: Number(n.start) || 1, items: (n.items as SingleASTNode[][]).map(convert) });
        break;
      case "link": {
        const href = safeHref(String(n.target));
        const content = convert(n.content as SingleASTNode[]);
        const text = plain(n.content as SingleASTNode[]);
        if (!href) {
          // Not a link we open: show what was written, as text.
          push({ type: "text", content: n.masked ? `[${text}](${String(n.target)})` : String(n.target) });
        } else {
          out.push({ type: "link", href, content, masked: !!n.masked && text !== String(n.target) });
        }
        break;
      }
      default:
        // A rule we do not render (none today): keep its source text.
        push({ type: "text", content: plain([n]) });
    }
  }
  return out;
}

/** Parses message text. Never throws: anything odd comes back as plain text. */
export function parseMarkdown(text: string): MdNode[] {
  try {
    return convert(rawParse(text.replace(/\r\n?/g, "\n"), { inline: true }));
  } catch {
    return [{ type: "text", content: text }];
  }
}

const EMOJI_RE = /^(?:\p{Extended_Pictographic}|\p{Regional_Indicator}|[#*0-9]\uFE0F?\u20E3)/u;

/**
 * How many emoji a message is made of, if it is nothing but 1 to 3 emoji (and spaces); such
 * messages are shown large, as Discord and Signal do. 0 otherwise.
 */
export function jumboEmojiCount(text: string): number {
  const trimmed = text.trim();
  if (!trimmed || trimmed.length > 64) return 0;
  const seg = new Intl.Segmenter(undefined, { granularity: "grapheme" });
  let n = 0;
  for (const { segment } of seg.segment(trimmed)) {
    if (/^\s+$/.test(segment)) continue;
    if (!EMOJI_RE.test(segment)) return 0;
    if (++n > 3) return 0;
  }
  return n;
}

/** The text of a message without markup, for previews, notifications and reply quotes. */
export function plainText(text: string): string {
  const walk = (nodes: MdNode[]): string =>
    nodes
      .map((n) => {
        switch (n.type) {
          case "text":
          case "inlineCode":
            return n.content;
          case "codeBlock":
            return n.content;
          case "br":
            return " ";
          case "spoiler":
            return "▮▮▮";
          case "list":
            return n.items.map(walk).join(" ");
          default:
            return walk(n.content);
        }
      })
      .join("");
  return walk(parseMarkdown(text)).replace(/\s+/g, " ").trim();
}
