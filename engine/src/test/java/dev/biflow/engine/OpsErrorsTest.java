// Bad arguments to every op family fail with IllegalArgumentException (IndexOutOfBounds for indices) naming op and shapes.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

import static org.junit.jupiter.api.Assertions.*;

class OpsErrorsTest {

    private static final Tensor A23 = Tensor.zeros(2, 3), A43 = Tensor.zeros(4, 3), A234 = Tensor.zeros(2, 3, 4);

    /** Asserts e is thrown and its message contains every fragment. */
    private static <T extends Throwable> T assertMessage(Class<T> type, Executable e, String... fragments) {
        T t = assertThrows(type, e);
        String m = t.getMessage();
        assertNotNull(m, "no message");
        for (String f : fragments) assertTrue(m.contains(f), "message \"" + m + "\" lacks \"" + f + "\"");
        return t;
    }

    private static void iae(Executable e, String... fragments) { assertMessage(IllegalArgumentException.class, e, fragments); }

    @Test
    void binaryOpsNameOpAndBothShapes() {
        iae(() -> Ops.add(A23, A43), "add", "(2, 3)", "(4, 3)");
        iae(() -> Ops.sub(A23, A43), "sub", "(2, 3)", "(4, 3)");
        iae(() -> Ops.mul(A43, A23), "mul", "(4, 3)", "(2, 3)");
        iae(() -> Ops.div(A23, Tensor.zeros(3, 2)), "div", "(2, 3)", "(3, 2)");
        iae(() -> A23.add(Tensor.zeros(4)), "add", "(2, 3)", "(4)");
        iae(() -> Ops.where(Tensor.zeros(5), A23, A23), "where", "(5)", "(2, 3)");
        iae(() -> Ops.expand(A23, 4, 3), "expand", "(2, 3)", "(4, 3)");
        iae(() -> Ops.expand(A234, 3, 4), "expand", "(2, 3, 4)", "(3, 4)");
    }

    @Test
    void matmulShapes() {
        iae(() -> Ops.matmul(A23, A43, false, false), "matmul", "(2, 3)", "(4, 3)", "K=3 vs 4");
        iae(() -> Ops.matmul(A23, A23, true, true), "matmul", "(2, 3)^T", "K=2 vs 3");
        iae(() -> Ops.matmul(Tensor.zeros(3), A23, false, false), "matmul", "(3)", "rank");
        iae(() -> Ops.matmul(Tensor.zeros(2, 2, 3), Tensor.zeros(3, 3, 4), false, false), "matmul", "(2, 2, 3)", "(3, 3, 4)", "batch");
        iae(() -> Ops.matmul(A23, Tensor.zeros(2, 3, 4), false, false), "matmul", "(2, 3)", "(2, 3, 4)");
    }

    @Test
    void reshapeAndPermute() {
        iae(() -> Ops.reshape(A23, 4, 2), "reshape", "(2, 3)", "(4, 2)", "6", "8");
        iae(() -> Ops.reshape(A23, -1, -1), "reshape", "-1", "(2, 3)");
        iae(() -> Ops.reshape(A23, 4, -1), "reshape", "(4, -1)", "(2, 3)");
        iae(() -> Ops.reshape(A23, -2, 3), "reshape", "(-2, 3)", "(2, 3)");
        iae(() -> Ops.permute(A234, 0, 1), "permute", "(2, 3, 4)", "[0, 1]");
        iae(() -> Ops.permute(A234, 0, 1, 1), "permute", "(2, 3, 4)", "repeated");
        iae(() -> Ops.permute(A234, 0, 1, 3), "permute", "(2, 3, 4)", "axis 3");
        iae(() -> Ops.transpose(A23, 0, 2), "transpose", "(2, 3)", "axis 2");
        iae(() -> Ops.flip(A23, -3), "flip", "(2, 3)", "axis -3");
        iae(() -> Ops.flip(Tensor.scalar(1), 0), "flip", "()");
    }

    @Test
    void reductions() {
        iae(() -> Ops.sum(A234, new int[]{3}, false), "sum", "(2, 3, 4)", "axis 3");
        iae(() -> Ops.mean(A234, new int[]{1, -2}, false), "mean", "(2, 3, 4)", "twice");
        iae(() -> Ops.max(A234, new int[]{-4}, true), "max", "(2, 3, 4)", "axis -4");
        iae(() -> Ops.max(Tensor.zeros(2, 0), new int[]{1}, false), "max", "(2, 0)", "empty");
        iae(() -> Ops.mean(Tensor.zeros(0, 3)), "mean", "(0, 3)");
        iae(() -> A23.sum(2, false), "sum", "(2, 3)");
    }

    @Test
    void concatSplitNarrowChunk() {
        iae(() -> Ops.concat(0, A23, A234), "concat", "rank", "(2, 3)", "(2, 3, 4)");
        iae(() -> Ops.concat(1, A23, A43), "concat", "(2, 3)", "(4, 3)", "axis 0");
        iae(() -> Ops.concat(0), "concat", "no tensors");
        iae(() -> Ops.concat(2, A23, A23), "concat", "axis 2", "(2, 3)");
        iae(() -> Ops.narrow(A23, 1, 2, 2), "narrow", "[2, 4)", "(2, 3)");
        iae(() -> Ops.narrow(A23, 0, -1, 1), "narrow", "(2, 3)");
        iae(() -> Ops.narrow(A23, 0, 1, -1), "narrow", "(2, 3)");
        iae(() -> Ops.split(A23, 1, 1, 1), "split", "[1, 1]", "(2, 3)");
        iae(() -> Ops.split(A23, 1, 4, -1), "split", "(2, 3)", "-1");
        iae(() -> Ops.chunk(A23, 2, 1), "chunk", "(2, 3)", "2");
        iae(() -> Ops.chunk(A23, 0, 1), "chunk", "(2, 3)");
    }

    @Test
    void indexSelectAndPadAndClamp() {
        assertMessage(IndexOutOfBoundsException.class, () -> Ops.indexSelect(A43, 0, new int[]{1, 4}), "indexSelect", "4", "(4, 3)");
        assertMessage(IndexOutOfBoundsException.class, () -> Ops.indexSelect(A43, 1, new int[]{-1}), "indexSelect", "-1", "(4, 3)");
        iae(() -> Ops.indexSelect(A43, 2, new int[]{0}), "indexSelect", "(4, 3)");
        iae(() -> Ops.pad(A23, new int[]{1}, new int[]{1, 1}, 0), "pad", "(2, 3)");
        iae(() -> Ops.pad(A23, new int[]{1, -1}, new int[]{1, 1}, 0), "pad", "(2, 3)", "negative");
        iae(() -> Ops.clamp(A23, 1f, 0f), "clamp", "1.0", "0.0");
    }

    @Test
    void tensorMisuse() {
        iae(() -> A23.item(), "item()", "(2, 3)");
        iae(() -> A23.copy().requiresGrad(true).backward(), "backward", "(2, 3)");
        iae(() -> Tensor.ones(2).requiresGrad(true).backward(Tensor.ones(3)), "backward", "(3)", "(2)");
        iae(() -> Grad.grad(A23.copy().requiresGrad(true), null, A23), "Grad.grad", "(2, 3)");
        iae(() -> Grad.grad(A23.copy().requiresGrad(true), Tensor.ones(3, 2), A23), "Grad.grad", "(3, 2)", "(2, 3)");
        iae(() -> Tensor.of(new float[5], 2, 3), "Tensor.of", "5", "(2, 3)");
        iae(() -> Tensor.of(new float[][]{{1, 2}, {3}}), "Tensor.of", "row 1");
        iae(() -> Tensor.zeros(2, -1), "(2, -1)");
        iae(() -> Tensor.arange(-1), "arange", "-1");
        assertMessage(IndexOutOfBoundsException.class, () -> A23.get(2, 0), "[2, 0]", "(2, 3)");
        assertMessage(IndexOutOfBoundsException.class, () -> A23.get(0, -1), "[0, -1]", "(2, 3)");
        iae(() -> A23.get(1), "[1]", "(2, 3)", "rank");
        iae(() -> A23.size(2), "size", "axis 2", "(2, 3)");
        assertMessage(IllegalStateException.class, () -> Tensor.scalar(1).backward(), "requiresGrad");
    }
}
