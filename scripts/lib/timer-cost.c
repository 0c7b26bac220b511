/* What a timer costs this machine: the price a loop pays for every wake-up
 * it schedules. Used by scripts/timer-cost.sh; see results/loadgen-pacing.md.
 *
 *   sleep:        clock_nanosleep for 1 µs, 100 000 times: wall time and CPU
 *                 time per sleep (a sleep arms a timer, idles and wakes).
 *   near arm:     arm and disarm a timerfd 20 µs ahead (it becomes the CPU's
 *                 earliest timer: the timer device is reprogrammed twice).
 *   far arm:      the same 2 s ahead (not the earliest: no reprogramming).
 *   fire:         arm 2 µs ahead and spin 5 µs while it fires, minus the spin.
 */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double cpu_us(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static double arm_disarm(int fd, long ns, int n) {
    struct itimerspec on = {{0, 0}, {ns / 1000000000L, ns % 1000000000L}}, off = {{0, 0}, {0, 0}};
    double start = now_us();
    for (int i = 0; i < n; i++) {
        timerfd_settime(fd, 0, &on, 0);
        timerfd_settime(fd, 0, &off, 0);
    }
    return (now_us() - start) / n;
}

int main(void) {
    int n = 100000;
    struct timespec one = {0, 1000};
    double wall = now_us(), cpu = cpu_us();
    for (int i = 0; i < n; i++) clock_nanosleep(CLOCK_MONOTONIC, 0, &one, 0);
    printf("sleep 1 us: %.1f us wall, %.1f us CPU per sleep\n", (now_us() - wall) / n, (cpu_us() - cpu) / n);

    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    printf("arm + disarm a timer 20 us ahead: %.1f us\n", arm_disarm(fd, 20000, 200000));
    printf("arm + disarm a timer 2 s ahead: %.1f us\n", arm_disarm(fd, 2000000000L, 200000));

    int m = 20000;
    struct itimerspec soon = {{0, 0}, {0, 2000}};
    double start = now_us();
    for (int i = 0; i < m; i++) {
        timerfd_settime(fd, 0, &soon, 0);
        double spin = now_us();
        while (now_us() - spin < 5.0) {
        }
    }
    printf("arm a timer 2 us ahead and let it fire during a 5 us spin: %.1f us beyond the spin\n",
           (now_us() - start) / m - 5.0);
    return 0;
}
