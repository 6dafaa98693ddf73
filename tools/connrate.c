// SPDX-License-Identifier: Apache-2.0
/*
 * connrate: opens TCP connections to ADDR:PORT one after another for SECONDS and
 * prints how many completed and how long it took ("<count> <seconds>").  Each
 * connection is closed with RST (SO_LINGER 0) so no client port waits in
 * TIME_WAIT.  `septum bench datapath` runs it inside a pod's network namespace
 * to compare new-connection rates: a Python loop spends ~100 us per connection
 * in the interpreter, which hides the few microseconds an enforcer adds; this
 * loop spends a few.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in server = { .sin_family = AF_INET };
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	struct timeval timeout = { .tv_sec = 1 };
	double seconds, start, elapsed;
	long count = 0;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &server.sin_addr) != 1 ||
	    atoi(argv[2]) <= 0 || atoi(argv[2]) > 65535 || (seconds = atof(argv[3])) <= 0) {
		fprintf(stderr, "usage: connrate IPV4-ADDRESS PORT SECONDS\n");
		return 2;
	}
	server.sin_port = htons((unsigned short)atoi(argv[2]));
	start = now_s();
	while ((elapsed = now_s() - start) < seconds) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0) {
			fprintf(stderr, "connrate: socket: %s\n", strerror(errno));
			return 1;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
		if (connect(fd, (struct sockaddr *)&server, sizeof(server)) == 0)
			count++;
		close(fd);
	}
	printf("%ld %.6f\n", count, elapsed);
	return 0;
}
