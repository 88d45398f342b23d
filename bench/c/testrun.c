/* testrun.c: the B1 driver: BPF_PROG_TEST_RUN of one program over a file of packets, in a tight loop.
 *
 * Usage: bench-testrun PROG_FD PACKETS REPEAT [OUT]
 *   PROG_FD is a program fd inherited from the parent; PACKETS holds records (u16 length, frame);
 *   each record is run once with `repeat` REPEAT (the kernel times the runs and returns the mean).
 *   OUT, when given, receives the packet each run left, in the same record format.
 * Prints one line per record: "<return value> <duration ns>". A C loop keeps the caches of the
 * machine as warm as the program under test leaves them (no interpreter runs between records). */
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* the output buffer for the packet the program leaves */
static unsigned char out[65536];

int main(int argc, char **argv)
{
	FILE *f;
	unsigned char *buf;
	long size;
	uint32_t *ret, *dur;
	size_t n = 0, off = 0;
	int fd, repeat;

	FILE *outf = NULL;

	if (argc != 4 && argc != 5)
		return 2;
	if (argc == 5 && !(outf = fopen(argv[4], "wb")))
		return 2;
	fd = atoi(argv[1]);
	repeat = atoi(argv[3]);
	f = fopen(argv[2], "rb");
	if (!f)
		return 2;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	rewind(f);
	buf = malloc(size);
	if (fread(buf, 1, size, f) != (size_t)size)
		return 2;
	fclose(f);
	ret = malloc(sizeof(*ret) * (size / 2 + 1));
	dur = malloc(sizeof(*dur) * (size / 2 + 1));
	while (off + 2 <= (size_t)size) {
		uint16_t len;
		union bpf_attr attr;

		memcpy(&len, buf + off, 2);
		off += 2;
		memset(&attr, 0, sizeof(attr));
		attr.test.prog_fd = fd;
		attr.test.data_in = (uint64_t)(uintptr_t)(buf + off);
		attr.test.data_size_in = len;
		attr.test.data_out = (uint64_t)(uintptr_t)out;
		attr.test.data_size_out = sizeof(out);
		attr.test.repeat = repeat;
		if (syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr))) {
			perror("BPF_PROG_TEST_RUN");
			return 1;
		}
		if (outf) {
			uint16_t olen = (uint16_t)attr.test.data_size_out;

			fwrite(&olen, 2, 1, outf);
			fwrite(out, 1, olen, outf);
		}
		ret[n] = attr.test.retval;
		dur[n] = attr.test.duration;
		n++;
		off += len;
	}
	if (outf)
		fclose(outf);
	for (size_t i = 0; i < n; i++)
		printf("%u %u\n", ret[i], dur[i]);
	return 0;
}
