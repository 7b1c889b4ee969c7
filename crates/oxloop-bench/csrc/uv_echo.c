/* A libuv echo server for oxloop-bench, with the same command line as the Rust ones:
 *   oxloop-uv-echo serve libuv <ipv4:port> [--cpu N] [--exit-after N]
 * Prints "listening on <ip:port>", then echoes every byte back as it arrives:
 * uv_try_write first, a queued uv_write for whatever the socket refuses (the way
 * uvloop's transports write). 64 KiB read buffer, TCP_NODELAY, one thread. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static char read_buf[64 * 1024];
static long closed_count = 0;
static long exit_after = -1;

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    buf->base = read_buf;
    buf->len = sizeof read_buf;
}

static void on_close(uv_handle_t *h) {
    free(h);
    closed_count++;
    if (exit_after > 0 && closed_count >= exit_after) exit(0);
}

static void on_write(uv_write_t *req, int status) {
    write_req_t *w = (write_req_t *)req;
    free(w->buf.base);
    free(w);
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0) return;
    size_t done = 0;
    if (uv_stream_get_write_queue_size(s) == 0) {
        uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
        int w = uv_try_write(s, &b, 1);
        if (w > 0) done = (size_t)w;
        else if (w != UV_EAGAIN && w < 0) {
            uv_close((uv_handle_t *)s, on_close);
            return;
        }
    }
    if (done < (size_t)n) {
        write_req_t *w = malloc(sizeof *w);
        size_t rest = (size_t)n - done;
        w->buf = uv_buf_init(malloc(rest), (unsigned)rest);
        memcpy(w->buf.base, buf->base + done, rest);
        if (uv_write(&w->req, s, &w->buf, 1, on_write) < 0) {
            free(w->buf.base);
            free(w);
            uv_close((uv_handle_t *)s, on_close);
        }
    }
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    uv_tcp_t *client = malloc(sizeof *client);
    uv_tcp_init(server->loop, client);
    if (uv_accept(server, (uv_stream_t *)client) == 0) {
        uv_tcp_nodelay(client, 1);
        uv_read_start((uv_stream_t *)client, on_alloc, on_read);
    } else {
        uv_close((uv_handle_t *)client, on_close);
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "usage: %s serve libuv <ipv4:port> [--cpu N] [--exit-after N]\n", argv[0]);
        return 2;
    }
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--cpu") == 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(atoi(argv[i + 1]), &set);
            if (sched_setaffinity(0, sizeof set, &set) != 0) {
                perror("sched_setaffinity");
                return 1;
            }
        } else if (strcmp(argv[i], "--exit-after") == 0) {
            exit_after = atol(argv[i + 1]);
        }
    }
    char host[64];
    const char *colon = strrchr(argv[3], ':');
    if (!colon || (size_t)(colon - argv[3]) >= sizeof host) {
        fprintf(stderr, "bad address %s\n", argv[3]);
        return 2;
    }
    memcpy(host, argv[3], (size_t)(colon - argv[3]));
    host[colon - argv[3]] = 0;
    struct sockaddr_in addr;
    if (uv_ip4_addr(host, atoi(colon + 1), &addr) != 0) {
        fprintf(stderr, "bad address %s\n", argv[3]);
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (rc != 0) {
        fprintf(stderr, "listen: %s\n", uv_strerror(rc));
        return 1;
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
    char ip[32];
    uv_ip4_name(&bound, ip, sizeof ip);
    printf("listening on %s:%d\n", ip, ntohs(bound.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
