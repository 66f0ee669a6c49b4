/* Second half of the double-include check: see double_include_a.c. */
#include <cfutures.h>
#include <cfutures.h>

int double_include_a(void);

int main(void) {
    cf_state st = CF_STATE_FINISHED;
    return double_include_a() + (int)st == -1;
}
