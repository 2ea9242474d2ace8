// An inference plan: a fixed list of ops over regions of one arena of `size` floats.
package dev.biflow.engine.plan;

import java.util.List;

/**
 * What a model's {@code lower} methods produce for one batch size: the ops in order and the arena size
 * they need. Immutable and shareable between threads; each run takes its own arena (see
 * {@link CpuExecutor#run}). Inputs and outputs are regions the lowering caller chose, in the arena or in arrays bound
 * at run time; externals holds the floats each bound array must have (buf 1 first).
 */
public record Plan(List<PlanOp> ops, int size, int batch, List<Integer> externals) {
    public Plan {
        ops = List.copyOf(ops);
        externals = List.copyOf(externals);
    }
}
