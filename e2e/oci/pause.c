/* The testbed's pod sandbox ("pause") process: holds the pod's namespaces open, reaps zombies
 * when it is PID 1 of a shared PID namespace, and exits 0 on SIGTERM or SIGINT (as PID 1 it would
 * otherwise ignore them and be killed only after a timeout). Build: gcc -static -O2 -o pause pause.c
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    struct sigaction sa;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        static const char version[] = "zeroflow testbed pause\n";
        return write(1, version, sizeof version - 1) < 0;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) {
        pause();
    }
    return 0;
}
