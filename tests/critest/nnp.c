/* nonewprivs stand-in for critest: installed setuid root; prints the effective uid. */
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
