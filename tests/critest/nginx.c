/* nginx stand-in for critest (offline): writes /var/run/nginx.pid, shows
 * "nginx: master process ..." as its command line and "nginx" as its name, and serves
 * /var/www over HTTP with a busybox httpd child on port $NGINX_PORT (default 80).
 * The image's Cmd must be ["/usr/sbin/nginx","-g","daemon off;"] so the argv area is
 * long enough for the title. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child;
static void stop(int sig) { if (child > 0) kill(child, SIGTERM); _exit(128 + sig); }

int main(int argc, char **argv) {
    const char *p = getenv("NGINX_PORT");
    char port[16];
    snprintf(port, sizeof port, "%s", p && *p ? p : "80");
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGQUIT, stop);
    FILE *f = fopen("/var/run/nginx.pid", "w");
    if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
    child = fork();
    if (child == 0) {
        execl("/bin/busybox", "httpd", "-f", "-p", port, "-h", "/var/www", (char *)NULL);
        perror("exec busybox httpd");
        _exit(127);
    }
    fprintf(stderr, "nginx stand-in: master %d, busybox httpd %d on :%s\n", (int)getpid(), (int)child, port);
    char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
    size_t n = (size_t)(end - start);
    const char *title = "nginx: master process nginx -g daemon off;";
    memset(start, 0, n);
    memcpy(start, title, strlen(title) < n ? strlen(title) : n);
    prctl(PR_SET_NAME, "nginx", 0, 0, 0);
    int st = 0;
    while (waitpid(child, &st, 0) < 0) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
