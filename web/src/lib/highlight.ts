// Syntax highlighting for fenced code blocks with lowlight (highlight.js producing a syntax tree,
// not HTML). Loaded on first use as its own chunk, so the main bundle stays small.

/** A highlighted fragment: plain text, or a span with highlight.js's class names. */
export type HlNode = string | { className: string; children: HlNode[] };

interface HastText {
  type: "text";
  value: string;
}
interface HastElement {
  type: "element";
  properties?: { className?: string[] | string };
  children: HastChild[];
}
type HastChild = HastText | HastElement | { type: string };

type Lowlight = {
  registered(lang: string): boolean;
  highlight(lang: string, code: string): { children: HastChild[] };
};

let loading: Promise<Lowlight> | null = null;
function load(): Promise<Lowlight> {
  loading ??= import("lowlight").then((m) => m.createLowlight(m.common) as unknown as Lowlight);
  return loading;
}

/** Languages people write after ``` that highlight.js names differently. */
const ALIASES: Record<string, string> = { rs: "rust", js: "javascript", ts: "typescript", py: "python", sh: "bash", shell: "bash", yml: "yaml", md: "markdown", "c++": "cpp" };

function convert(children: HastChild[]): HlNode[] {
  const out: HlNode[] = [];
  for (const c of children) {
    if (c.type === "text") out.push((c as HastText).value);
    else if (c.type === "element") {
      const e = c as HastElement;
      const cls = e.properties?.className;
      out.push({ className: Array.isArray(cls) ? cls.join(" ") : (cls ?? ""), children: convert(e.children) });
    }
  }
  return out;
}

/** The code as highlighted fragments; plain (one string) for an unknown or missing language. */
export async function highlight(code: string, lang: string | null): Promise<HlNode[]> {
  if (!lang) return [code];
  const ll = await load();
  const name = ALIASES[lang] ?? lang;
  if (!ll.registered(name)) return [code];
  try {
    return convert(ll.highlight(name, code).children);
  } catch {
    return [code];
  }
}
