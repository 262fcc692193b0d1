/*
 * vsock-tool: the guest side of the vsock end-to-end tests (busybox has no vsock client).
 * Built static at guest build time (scripts/guest/build-guest.sh) into the initramfs.
 *
 *   vsock-tool connect CID PORT      stdin -> socket, socket -> stdout (shutdown(SHUT_WR) at
 *                                    stdin's end); exits when the socket ends
 *   vsock-tool listen PORT           accepts one connection, then the same copy loop
 *   vsock-tool stall PORT            accepts one connection and never reads it; says
 *                                    "VT-RESULT stalled" and sleeps until killed
 *   vsock-tool multi CID PORT N B    N connections at once, each sends B bytes of its own
 *                                    pattern and reads them back (an echo peer); prints
 *                                    "MULTI-OK N" when every byte matched
 *   vsock-tool flood CID PORT        connects and writes until the write fails
 *
 * Errors: "VT-ERR <where> <errno name>" on stderr, exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static const char *ename(int e) {
  switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EPIPE: return "EPIPE";
    case ENOTCONN: return "ENOTCONN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENODEV: return "ENODEV";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return strerror(e);
  }
}

static void die(const char *where) {
  fprintf(stderr, "VT-ERR %s %s\n", where, ename(errno));
  exit(1);
}

static int vconnect(unsigned cid, unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) die("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  return s;
}

static int vaccept(unsigned port) {
  int l = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (l < 0) die("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(l, 128) < 0) die("listen");
  fprintf(stderr, "VT-RESULT listening-%u\n", port); /* stderr: stdout may be the data */
  int s = accept(l, NULL, NULL);
  if (s < 0) die("accept");
  close(l);
  return s;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* stdin -> s, s -> stdout, until s ends (and stdin ended). */
static int copy_loop(int s) {
  static char buf[65536];
  int in_open = 1, s_open = 1;
  while (s_open) {
    struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = 0, .events = in_open ? POLLIN : 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[0].revents) {
      ssize_t r = read(s, buf, sizeof buf);
      if (r < 0) die("read");
      if (r == 0) s_open = 0;
      else if (write_all(1, buf, (size_t)r) < 0) die("stdout");
    }
    if (in_open && p[1].revents) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r < 0) die("stdin");
      if (r == 0) {
        in_open = 0;
        if (shutdown(s, SHUT_WR) < 0) die("shutdown");
      } else if (write_all(s, buf, (size_t)r) < 0) die("write");
    }
  }
  close(s);
  return 0;
}

static unsigned char pat(unsigned conn, size_t i) {
  return (unsigned char)((i * 31 + conn * 7 + (i >> 8)) & 0xff);
}

static int multi(unsigned cid, unsigned port, int n, size_t bytes) {
  int *fd = calloc((size_t)n, sizeof(int));
  size_t *sent = calloc((size_t)n, sizeof(size_t)), *got = calloc((size_t)n, sizeof(size_t));
  struct pollfd *p = calloc((size_t)n, sizeof(struct pollfd));
  char buf[8192];
  for (int i = 0; i < n; i++) {
    fd[i] = vconnect(cid, port);
    fcntl(fd[i], F_SETFL, O_NONBLOCK);
  }
  int done = 0;
  while (done < n) {
    for (int i = 0; i < n; i++) {
      p[i].fd = got[i] == bytes ? -1 : fd[i];
      p[i].events = POLLIN | (sent[i] < bytes ? POLLOUT : 0);
    }
    if (poll(p, (nfds_t)n, -1) < 0) die("poll");
    for (int i = 0; i < n; i++) {
      if (p[i].fd < 0) continue;
      if ((p[i].revents & POLLOUT) && sent[i] < bytes) {
        size_t k = bytes - sent[i] < sizeof buf ? bytes - sent[i] : sizeof buf;
        for (size_t j = 0; j < k; j++) buf[j] = (char)pat((unsigned)i, sent[i] + j);
        ssize_t w = write(fd[i], buf, k);
        if (w < 0 && errno != EAGAIN) die("write");
        if (w > 0) sent[i] += (size_t)w;
        if (sent[i] == bytes) shutdown(fd[i], SHUT_WR);
      }
      if (p[i].revents & (POLLIN | POLLHUP)) {
        ssize_t r = read(fd[i], buf, sizeof buf);
        if (r < 0 && errno != EAGAIN) die("read");
        if (r == 0 && got[i] < bytes) {
          fprintf(stderr, "VT-ERR short connection %d got %zu\n", i, got[i]);
          return 1;
        }
        for (ssize_t j = 0; j < r; j++)
          if ((unsigned char)buf[j] != pat((unsigned)i, got[i] + (size_t)j)) {
            fprintf(stderr, "VT-ERR mismatch connection %d at %zu\n", i, got[i] + (size_t)j);
            return 1;
          }
        if (r > 0) got[i] += (size_t)r;
        if (got[i] == bytes) {
          close(fd[i]);
          done++;
        }
      }
    }
  }
  printf("MULTI-OK %d\n", n);
  return 0;
}

static __attribute__((noreturn)) void flood(unsigned cid, unsigned port) {
  int s = vconnect(cid, port);
  static char buf[16384];
  memset(buf, 'x', sizeof buf);
  fprintf(stderr, "VT-RESULT flood-connected\n");
  for (;;) {
    ssize_t w = write(s, buf, sizeof buf);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 4 && !strcmp(argv[1], "connect")) return copy_loop(vconnect((unsigned)strtoul(argv[2], 0, 0), (unsigned)strtoul(argv[3], 0, 0)));
  if (argc == 3 && !strcmp(argv[1], "listen")) return copy_loop(vaccept((unsigned)strtoul(argv[2], 0, 0)));
  if (argc == 3 && !strcmp(argv[1], "stall")) {
    int s = vaccept((unsigned)strtoul(argv[2], 0, 0));
    fprintf(stderr, "VT-RESULT stalled\n");
    for (;;) pause();
    close(s);
  }
  if (argc == 6 && !strcmp(argv[1], "multi")) return multi((unsigned)strtoul(argv[2], 0, 0), (unsigned)strtoul(argv[3], 0, 0), atoi(argv[4]), strtoul(argv[5], 0, 0));
  if (argc == 4 && !strcmp(argv[1], "flood")) flood((unsigned)strtoul(argv[2], 0, 0), (unsigned)strtoul(argv[3], 0, 0));
  fprintf(stderr, "usage: vsock-tool connect CID PORT | listen PORT | stall PORT | multi CID PORT N BYTES | flood CID PORT\n");
  return 2;
}
