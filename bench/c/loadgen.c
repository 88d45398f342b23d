/* loadgen.c: the client of B2: new-connection rate and connect latency, or request/response rate.
 *
 * Usage: bench-loadgen MODE BASE_IP COUNT PORT [options]
 *   MODE conn: each of C slots loops connect() -> 64-byte request -> echo read -> close (RST, so no
 *              TIME_WAIT piles up); the connect latency is connect() to writable (the handshake).
 *   MODE rr:   C persistent connections exchange 64-byte request/echo pairs.
 *   Targets are BASE_IP + i (i < COUNT), PORT; -u picks uniformly at random, -h always target 0.
 *   -c C (slots, default 1)  -d SECONDS (measured, default 2)  -w SECONDS (warm-up, default 0.3)
 * Prints one JSON object: counts, rate per second, latency p50/p99 in microseconds, and the busy
 * CPU time of the whole machine (/proc/stat) during the measured window. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* bytes of each request (and echo) */
#define PAYLOAD 64
/* a connection or exchange not done after this long counts as an error */
#define TIMEOUT_NS 2000000000ULL
/* most slots */
#define MAX_SLOTS 1024

/* the state of one slot */
enum { S_IDLE, S_CONNECTING, S_WAITING };

/* one slot: a connection in progress */
struct slot {
	int fd;
	int state;
	uint64_t started;  /* ns when connect() or the request was issued */
	int got;           /* echo bytes read so far */
};

/* the latency samples of the measured window, ns */
static uint32_t *samples;
static size_t nsamples, capsamples;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ULL;

static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void add_sample(uint64_t ns)
{
	if (nsamples == capsamples) {
		capsamples = capsamples ? capsamples * 2 : 1 << 16;
		samples = realloc(samples, capsamples * sizeof(*samples));
	}
	samples[nsamples++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(double q)
{
	if (!nsamples)
		return 0;
	return samples[(size_t)(q * (nsamples - 1))] / 1000.0;
}

/* busy and total jiffies of all CPUs (/proc/stat) */
static void cpu_jiffies(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");

	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
			 &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 8) {
		*busy = *total = 0;
	} else {
		*total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
		*busy = *total - v[3] - v[4]; /* minus idle and iowait */
	}
	if (f)
		fclose(f);
}

static uint32_t base;
static int count, port, hot;

static struct sockaddr_in pick(void)
{
	uint32_t i = hot ? 0 : (uint32_t)(xorshift() % (uint64_t)count);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(base + i) };

	return sa;
}

static void drop(int ep, struct slot *s, int rst)
{
	if (s->fd >= 0) {
		if (rst) {
			struct linger lg = { 1, 0 };

			setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
	}
	s->fd = -1;
	s->state = S_IDLE;
}

/* start a connection on slot s; 0 on success */
static int start_connect(int ep, struct slot *s, int idx)
{
	struct sockaddr_in sa = pick();
	struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = idx };
	int one = 1;

	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (s->fd < 0)
		return -1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->started = now_ns();
	if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		close(s->fd);
		s->fd = -1;
		return -1;
	}
	s->state = S_CONNECTING;
	epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
	return 0;
}

static int send_request(int ep, struct slot *s, int idx)
{
	static const char req[PAYLOAD] = "bench";
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = idx };

	s->started = now_ns();
	s->got = 0;
	if (write(s->fd, req, PAYLOAD) != PAYLOAD)
		return -1;
	s->state = S_WAITING;
	epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
	return 0;
}

int main(int argc, char **argv)
{
	static struct slot slots[MAX_SLOTS];
	struct epoll_event evs[MAX_SLOTS];
	int conc = 1, opt, ep, rr;
	double dur = 2, warm = 0.3;
	uint64_t done = 0, errors = 0, t0, tstart, tend, b0 = 0, c0 = 0, b1, c1;
	int measuring = 0;
	struct in_addr a;

	if (argc < 5 || inet_pton(AF_INET, argv[2], &a) != 1) {
		fprintf(stderr, "usage: %s conn|rr BASE_IP COUNT PORT [-c C] [-d S] [-w S] [-u|-h]\n", argv[0]);
		return 2;
	}
	rr = !strcmp(argv[1], "rr");
	base = ntohl(a.s_addr);
	count = atoi(argv[3]);
	port = atoi(argv[4]);
	optind = 5;
	while ((opt = getopt(argc, argv, "c:d:w:uh")) != -1) {
		if (opt == 'c')
			conc = atoi(optarg);
		else if (opt == 'd')
			dur = atof(optarg);
		else if (opt == 'w')
			warm = atof(optarg);
		else if (opt == 'h')
			hot = 1;
		else if (opt == 'u')
			hot = 0;
	}
	if (conc < 1 || conc > MAX_SLOTS || count < 1)
		return 2;
	rng ^= (uint64_t)getpid() << 32 ^ now_ns();
	ep = epoll_create1(0);
	for (int i = 0; i < conc; i++) {
		slots[i].fd = -1;
		if (start_connect(ep, &slots[i], i))
			errors++;
	}
	t0 = now_ns();
	tstart = t0 + (uint64_t)(warm * 1e9);
	tend = tstart + (uint64_t)(dur * 1e9);
	for (;;) {
		uint64_t t = now_ns();
		int n;

		if (!measuring && t >= tstart) {
			measuring = 1;
			done = errors = nsamples = 0;
			cpu_jiffies(&b0, &c0);
		}
		if (t >= tend)
			break;
		n = epoll_wait(ep, evs, conc, 10);
		t = now_ns();
		for (int k = 0; k < n; k++) {
			int i = evs[k].data.u32;
			struct slot *s = &slots[i];

			if (s->state == S_CONNECTING) {
				int err = 0;
				socklen_t len = sizeof(err);

				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err) {
					errors++;
					drop(ep, s, 0);
					continue;
				}
				if (!rr)
					add_sample(t - s->started);
				if (send_request(ep, s, i)) {
					errors++;
					drop(ep, s, 1);
				}
			} else if (s->state == S_WAITING) {
				char buf[PAYLOAD];
				ssize_t r = read(s->fd, buf, PAYLOAD - s->got);

				if (r <= 0) {
					if (r < 0 && errno == EAGAIN)
						continue;
					errors++;
					drop(ep, s, 1);
					continue;
				}
				s->got += r;
				if (s->got < PAYLOAD)
					continue;
				done++;
				if (rr) {
					add_sample(t - s->started);
					if (send_request(ep, s, i)) {
						errors++;
						drop(ep, s, 1);
					}
				} else {
					drop(ep, s, 1);
				}
			}
		}
		for (int i = 0; i < conc; i++) {
			struct slot *s = &slots[i];

			if (s->state != S_IDLE && t > s->started && t - s->started > TIMEOUT_NS) {
				errors++;
				drop(ep, s, 1);
			}
			if (s->state == S_IDLE && start_connect(ep, s, i))
				errors++;
		}
	}
	cpu_jiffies(&b1, &c1);
	qsort(samples, nsamples, sizeof(*samples), cmp_u32);
	{
		double secs = (now_ns() - tstart) / 1e9;
		double hz = (double)sysconf(_SC_CLK_TCK);

		printf("{\"mode\": \"%s\", \"done\": %llu, \"errors\": %llu, \"seconds\": %.3f, \"rate\": %.1f, "
		       "\"lat_p50_us\": %.2f, \"lat_p99_us\": %.2f, \"samples\": %zu, \"cpu_busy_s\": %.3f, "
		       "\"cpu_total_s\": %.3f}\n",
		       rr ? "rr" : "conn", (unsigned long long)done, (unsigned long long)errors, secs, done / secs,
		       pct(0.5), pct(0.99), nsamples, (b1 - b0) / hz, (c1 - c0) / hz);
	}
	return 0;
}
