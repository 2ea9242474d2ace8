package dev.biflow.samples;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class AutogradBasicsTest {
    @Test
    void backwardGivesTheClosedFormGradients() {
        float[] xv = {1, -2, 3, 0.25f}, wv = {0.5f, 2, -1, 4};
        Tensor[] r = AutogradBasics.backwardExample(Tensor.of(xv.clone(), 4), Tensor.of(wv.clone(), 4));
        float loss = 0;
        float[] dx = new float[4], dw = new float[4];
        for (int i = 0; i < 4; i++) {
            loss += wv[i] * xv[i] * xv[i];
            dx[i] = 2 * wv[i] * xv[i];
            dw[i] = xv[i] * xv[i];
        }
        assertEquals(loss, r[0].item(), 1e-5);
        assertArrayEquals(dx, r[1].data(), 1e-5f, "dL/dx = 2 w x");
        assertArrayEquals(dw, r[2].data(), 1e-5f, "dL/dw = x^2");
    }

    @Test
    void gradGivesOneMinusTanhSquaredAndLeavesGradUntouched() {
        float[] uv = {-1, 0, 0.5f, 2, -3};
        Tensor u = Tensor.of(uv.clone(), 5);
        Tensor du = AutogradBasics.inputGradient(u);
        float[] expect = new float[uv.length];
        for (int i = 0; i < uv.length; i++) expect[i] = (float) (1 - Math.pow(Math.tanh(uv[i]), 2));
        assertArrayEquals(expect, du.data(), 1e-5f);
        assertNull(u.grad(), "Grad.grad returns the gradient instead of accumulating it");
    }

    @Test
    void logisticRegressionFitsTheBlobs() {
        AutogradBasics.Fit fit = AutogradBasics.fitLogistic(200, 100, 42, null);
        assertEquals(Math.log(2), fit.initialLoss(), 1e-5, "zero weights give p = 1/2 everywhere");
        assertTrue(fit.finalLoss() < 0.2, "loss after fitting: " + fit.finalLoss());
        assertTrue(fit.accuracy() > 0.9, "accuracy " + fit.accuracy());
        // the blobs are symmetric about the line x1 + x2 = 0: both weights positive, about equal
        float w0 = fit.weight().data()[0], w1 = fit.weight().data()[1];
        assertTrue(w0 > 0.5 && w1 > 0.5 && Math.abs(w0 - w1) < 0.5 * Math.max(w0, w1), "weights " + w0 + ", " + w1);
    }

    @Test
    void mainRuns() {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            AutogradBasics.main(new String[0]);
        } finally {
            System.setOut(old);
        }
        String out = buf.toString(StandardCharsets.UTF_8);
        assertTrue(out.contains("dL/dx = [1.0000, -8.0000, -6.0000]"), out);
        assertTrue(out.contains("inside Grad.noGrad(): false"), out);
    }
}
