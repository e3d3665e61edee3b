// Harness: quantise f32 from stdin with ggml-quants.c reference functions (see scripts/make_kquant_vectors.sh).
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include "ggml.h"
void quantize_row_q4_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q6_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q8_0_ref(const float * x, void * y, int64_t k);
int main(int argc, char **argv) {
    // read n floats from stdin (n = argv[2]), type argv[1], write bytes to stdout
    int n = atoi(argv[2]);
    float *x = malloc(n*4); fread(x, 4, n, stdin);
    unsigned char *y = malloc(n*2);
    size_t nb;
    if (argv[1][1]=='4') { quantize_row_q4_K_ref(x, y, n); nb = n/256*144; }
    else if (argv[1][1]=='6') { quantize_row_q6_K_ref(x, y, n); nb = n/256*210; }
    else { quantize_row_q8_0_ref(x, y, n); nb = n/32*34; }
    fwrite(y, 1, nb, stdout);
    return 0;
}
