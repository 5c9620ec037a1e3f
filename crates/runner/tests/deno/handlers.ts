// Handlers for crates/runner/tests/deno.rs: each test routes to the ones it needs.

type Ctx = { params: Record<string, string>; paths: Record<string, string>; remoteAddr: unknown };

function arg(req: Request, name: string): string {
  return new URL(req.url).searchParams.get(name) ?? "";
}

export function hello(_req: Request): Response {
  return new Response("hello");
}

export async function echo(req: Request, ctx: Ctx): Promise<Response> {
  return Response.json({
    method: req.method,
    url: req.url,
    params: ctx.params,
    paths: ctx.paths,
    remoteAddr: ctx.remoteAddr,
    body: await req.text(),
    headers: Object.fromEntries(req.headers),
  });
}

export async function fetchUrl(req: Request): Promise<Response> {
  const r = await fetch(arg(req, "url"));
  return new Response(`fetched ${r.status}: ${await r.text()}`);
}

export async function readFile(req: Request): Promise<Response> {
  return new Response(await Deno.readTextFile(arg(req, "path")));
}

export async function writeFile(req: Request): Promise<Response> {
  await Deno.writeTextFile(arg(req, "path"), await req.text());
  return new Response("written");
}

export function env(_req: Request): Response {
  const out: Record<string, string | null> = {};
  for (const name of ["HOME", "PATH", "LOG_LEVEL", "TOKEN", "UNDECLARED", "DENO_DIR"]) {
    try {
      out[name] = Deno.env.get(name) ?? null;
    } catch (e) {
      out[name] = `denied (${(e as Error).name})`;
    }
  }
  return Response.json(out);
}

export function spin(): Response {
  while (true) {
    // A handler that never returns.
  }
}

export function hog(): Response {
  const keep: number[][] = [];
  while (true) keep.push(new Array(1 << 20).fill(1.5));
}

export function fail(): Response {
  throw new Error("the handler failed on purpose");
}

export function exit(): Response {
  Deno.exit(9);
}

export async function slow(req: Request): Promise<Response> {
  const ms = Number(arg(req, "ms"));
  await new Promise((resolve) => setTimeout(resolve, ms));
  return new Response(`slept ${ms}`);
}

export function notAResponse(): string {
  return "text";
}

export function forge(): Response {
  return new Response("forged", { headers: { "x-atoll-denied": "nothing", "x-atoll-handler": "other" } });
}
