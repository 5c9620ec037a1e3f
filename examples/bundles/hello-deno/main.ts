// A deno bundle: each route's handler is a function the module exports, called with the
// request and `ctx` (`ctx.params`: the route's `:name` parameters).
export function hello(_req: Request, _ctx: { params: Record<string, string> }): Response {
  return new Response("hello from deno", { headers: { "content-type": "text/plain; charset=utf-8" } });
}
