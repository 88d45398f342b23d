/* b3probe.c: B3's first-packet prober and the identity servers it tells apart.
 *
 * Usage:
 *   bench-b3probe serve PORT NAME
 *       accept connections forever; write "NAME\n" on each and close it.
 *   bench-b3probe probe IP PORT WANT TIMEOUT_S [INTERVAL_US]
 *       connect to IP:PORT in a loop, one connection at a time (a new source port each, so every
 *       attempt is a new flow the load balancer places afresh) and read the server's name. Prints
 *       "ready" once a server other than WANT answered (the old state carries traffic), then, at
 *       the first answer from WANT, one JSON line and exit 0:
 *         {"first_ns": CLOCK_REALTIME when the attempt that reached WANT started (its SYN left
 *          within microseconds), "prev_ns": start of the attempt before it (which did not reach
 *          WANT), "answered_ns": when WANT's answer arrived, "attempts": N, "errors": E,
 *          "period_ns": mean time between attempt starts}
 *       Exit 1 (same JSON with "timeout": 1) when WANT did not answer within TIMEOUT_S seconds;
 *       exit 2 when WANT answered before "ready" (the change was not a change).
 *   INTERVAL_US paces attempt starts (0, the default: back to back).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* longest server name we compare */
#define NAME_MAX_LEN 63
/* per-attempt connect/read timeout, ms: an attempt caught by the switch (its SYN to the old backend,
 * the rest rebalanced to the new one) must not hide the next attempt for long */
#define ATTEMPT_TIMEOUT_MS 20

static long long now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int serve(int port, const char *name)
{
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	char line[NAME_MAX_LEN + 2];
	int len = snprintf(line, sizeof(line), "%s\n", name);

	signal(SIGPIPE, SIG_IGN);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4096)) {
		perror("bind/listen");
		return 1;
	}
	printf("listening port=%d name=%s\n", port, name);
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		if (write(fd, line, len) < 0) {
			/* the prober gave up on this connection: nothing to do */
		}
		close(fd);
	}
}

/* one attempt: 1 and the answer in name when a server answered, 0 on error */
static int attempt(const struct sockaddr_in *dst, char *name)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = ATTEMPT_TIMEOUT_MS * 1000 };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int got = 0, ok = 0;

	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() too */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* close with a reset: no TIME_WAIT on either side however many attempts a change takes */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) == 0) {
		for (;;) {
			ssize_t n = read(fd, name + got, NAME_MAX_LEN - got);

			if (n <= 0)
				break;
			got += n;
			if (got >= NAME_MAX_LEN || memchr(name, '\n', got))
				break;
		}
		name[got] = 0;
		char *nl = strchr(name, '\n');
		if (nl) {
			*nl = 0;
			ok = 1;
		}
	}
	close(fd);
	return ok;
}

static void report(long long first, long long prev, long long answered, long attempts, long errors,
		   long long started, long long last_start, int timeout)
{
	long long period = attempts > 1 ? (last_start - started) / (attempts - 1) : 0;

	printf("{\"first_ns\": %lld, \"prev_ns\": %lld, \"answered_ns\": %lld, \"attempts\": %ld, \"errors\": %ld, "
	       "\"period_ns\": %lld, \"timeout\": %d}\n",
	       first, prev, answered, attempts, errors, period, timeout);
	fflush(stdout);
}

static int probe(const char *ip, int port, const char *want, double timeout_s, long interval_us)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(port) };
	long long deadline = now_ns(CLOCK_MONOTONIC) + (long long)(timeout_s * 1e9);
	long long started = 0, prev = 0, t0 = 0, next = 0;
	long attempts = 0, errors = 0;
	int ready = 0;
	char name[NAME_MAX_LEN + 1];

	if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		return 3;
	}
	while (now_ns(CLOCK_MONOTONIC) < deadline) {
		if (interval_us > 0) {
			long long m = now_ns(CLOCK_MONOTONIC);

			if (next > m) {
				struct timespec ts = { .tv_sec = (next - m) / 1000000000LL, .tv_nsec = (next - m) % 1000000000LL };
				nanosleep(&ts, NULL);
			}
			next = now_ns(CLOCK_MONOTONIC) + interval_us * 1000LL;
		}
		prev = t0;
		t0 = now_ns(CLOCK_REALTIME);
		if (!started)
			started = t0;
		attempts++;
		if (!attempt(&dst, name)) {
			errors++;
			continue;
		}
		if (strcmp(name, want) == 0) {
			if (!ready) {
				fprintf(stderr, "%s answered before the change\n", want);
				return 2;
			}
			report(t0, prev, now_ns(CLOCK_REALTIME), attempts, errors, started, t0, 0);
			return 0;
		}
		if (!ready) {
			ready = 1;
			printf("ready\n");
			fflush(stdout);
		}
	}
	report(0, prev, 0, attempts, errors, started, t0, 1);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "serve") == 0)
		return serve(atoi(argv[2]), argv[3]);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "probe") == 0)
		return probe(argv[2], atoi(argv[3]), argv[4], atof(argv[5]), argc == 7 ? atol(argv[6]) : 0);
	fprintf(stderr, "usage: %s serve PORT NAME | probe IP PORT WANT TIMEOUT_S [INTERVAL_US]\n", argv[0]);
	return 64;
}
