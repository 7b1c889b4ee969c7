"""A crawler with unmodified `urllib.request`, made green by `patch_all()`.

A small site is served by `http.server` from a green task on 127.0.0.1; the crawler
follows its links breadth-first, fetching up to 8 pages at once through a
`TaskPoolExecutor`, and stops at 30 pages.

    python green_crawler.py
"""

from oxloop import green

green.patch_all()  # before the standard library's network modules are used

import http.server  # noqa: E402
import re  # noqa: E402
import urllib.request  # noqa: E402

PAGES = 40  # the site: /0 .. /39, each linking to two others


class Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path.strip("/") or 0)
        links = "".join(f'<a href="/{(n * k + 1) % PAGES}">' for k in (2, 3))
        body = f"<title>page {n}</title>{links}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(green.TaskingMixIn, http.server.HTTPServer):
    request_queue_size = 64


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def crawl(root, limit=30, parallel=8):
    seen, frontier, titles = {root}, [root], {}
    with green.TaskPoolExecutor(max_workers=parallel) as pool:
        while frontier and len(titles) < limit:
            batch, frontier = frontier[: limit - len(titles)], frontier[limit - len(titles) :]
            for url, html in zip(batch, pool.map(fetch, batch), strict=True):
                titles[url] = re.search(r"<title>(.*?)</title>", html).group(1)
                for link in re.findall(r'href="(/\d+)"', html):
                    if root + link.lstrip("/") not in seen:
                        seen.add(root + link.lstrip("/"))
                        frontier.append(root + link.lstrip("/"))
    return titles


def main():
    server = Server(("127.0.0.1", 0), Site)
    serving = green.spawn(server.serve_forever, 0.05)
    titles = crawl(f"http://127.0.0.1:{server.server_address[1]}/")
    print(len(titles), "pages")
    print(sorted(titles.values(), key=lambda t: int(t.split()[1]))[0])
    serving.kill()
    serving.join()
    server.server_close()
    green.unpatch_all()


if __name__ == "__main__":
    main()
