/* Types "INJECTED\n" with ioctl(TIOCSTI) into every terminal it can reach: its stdin, stdout,
 * stderr and /dev/tty (its controlling terminal). Prints, per target, "fdN ok" or the error.
 * Used by tests/test_run_tty.py: nothing may reach the terminal of whoever ran the container. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void inject(const char *name, int fd) {
    const char *text = "INJECTED\n";
    if (fd < 0) {
        printf("%s open: %s\n", name, strerror(errno));
        return;
    }
    for (const char *p = text; *p; p++) {
        if (ioctl(fd, TIOCSTI, p) < 0) {
            printf("%s %s\n", name, strerror(errno));
            return;
        }
    }
    printf("%s ok\n", name);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    inject("fd0", 0);
    inject("fd1", 1);
    inject("fd2", 2);
    inject("tty", open("/dev/tty", O_RDWR | O_NOCTTY));
    return 0;
}
