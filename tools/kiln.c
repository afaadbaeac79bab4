/* The kiln command: dispatches to its subcommands. */
#include "cli.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: kiln [--help] [--version] <command> [<args>]\n"
    "\n"
    "kiln compiles ONNX models into self-contained plans for NVIDIA GPUs.\n"
    "\n"
    "commands:\n"
    "  compile MODEL.onnx   compile a model into a plan (-o MODEL.plan)\n"
    "  run MODEL.plan       run a plan on given or random inputs\n"
    "  bench MODEL.plan     time a plan: latency, throughput, GPU time\n"
    "  calibrate MODEL.onnx run a model over sample inputs (--data DIR) and write\n"
    "                       a calibration table for quantization (-o CALIB.json)\n"
    "  inspect FILE         show a model or plan: producer, opsets, inputs and\n"
    "                       outputs, op histogram, parameters, unsupported ops;\n"
    "                       for a plan also its build, layers and CUDA kernels\n"
    "\n"
    "Run 'kiln <command> --help' for a command's options.\n"
    "Exit codes: 0 ok, 1 bad input or usage, 2 internal error.\n";

int main(int argc, char **argv)
{
    /* Large blocks from the heap, kept after free: compiling a 1B model
     * allocates and frees hundred-MB scratch buffers (the CPU kernels'
     * operands as doubles, once per GEMM of the shape probe); as separate
     * mappings each would be faulted in and zeroed page by page again,
     * which cost more than the computation. */
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    if (argc < 2) {
        fputs(usage, stderr);
        return KN_EXIT_BAD_INPUT;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return KN_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("kiln %s\n", KN_VERSION_STRING);
        return KN_EXIT_OK;
    }
    if (strcmp(cmd, "inspect") == 0)
        return kn_cmd_inspect(argc - 1, argv + 1);
    if (strcmp(cmd, "compile") == 0)
        return kn_cmd_compile(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return kn_cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return kn_cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0)
        return kn_cmd_calibrate(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s'\n\n%s", cmd, usage);
    return KN_EXIT_BAD_INPUT;
}
