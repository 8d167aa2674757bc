// bench/run.sh's "Deno React renderer" program: Deno.serve on 127.0.0.1:PORT (Deno.args[0]) that
// renders a page of about 30 KB with React's server renderer for every request, as the reference's
// React benchmark does. React comes from npm, installed by bench/run.sh into the directory given as
// Deno.args[1] (node_modules there), loaded with require() so that no network access is needed.
import { createRequire } from "node:module";

const port = Number(Deno.args[0]);
const require = createRequire(`${Deno.args[1]}/`);
const React = require("react");
const { renderToString } = require("react-dom/server");
const h = React.createElement;

// A product listing: 270 rows of a few cells each, about 30 KB of HTML.
const items = Array.from({ length: 270 }, (_, i) => ({
  id: i,
  name: `Item number ${i}`,
  price: (i * 7.31) % 100,
  tags: ["red", "green", "blue"].slice(0, 1 + (i % 3)),
}));

function Row({ item }) {
  return h("tr", { className: item.id % 2 ? "odd" : "even" },
    h("td", null, item.id),
    h("td", null, h("a", { href: `/item/${item.id}` }, item.name)),
    h("td", null, item.price.toFixed(2)),
    h("td", null, item.tags.join(", ")));
}

function Page() {
  return h("html", null,
    h("head", null, h("title", null, "React server rendering benchmark")),
    h("body", null,
      h("h1", null, "Products"),
      h("table", null, h("tbody", null, items.map((item) => h(Row, { key: item.id, item }))))));
}

Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen() { console.log(`react_ssr: listening on 127.0.0.1:${port}`); },
}, () => new Response("<!DOCTYPE html>" + renderToString(h(Page)), { headers: { "content-type": "text/html" } }));
