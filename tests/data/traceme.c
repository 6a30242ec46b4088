/* A hostile container init (issue 8 #11): makes its parent (tophan, or tophand) its tracer,
   then execs argv[1..]: every exec and signal stop is then reported to that parent. */
#include <sys/ptrace.h>
#include <unistd.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) { perror("ptrace"); return 3; }
    puts("traced"); fflush(stdout);
    execv(argv[1], argv + 1);
    perror("execv");
    return 4;
}
