// Class consistency: how often the evaluation classifier recognises the class a sample was asked to be.
package dev.biflow.flow.metrics;

/**
 * The fraction of class-conditional samples whose arg-max prediction by the evaluation
 * classifier equals the label they were generated for. On real test images it is simply the
 * classifier's test accuracy, the ceiling a generator can be compared against.
 */
public final class ClassConsistency {
    private ClassConsistency() {}

    /** Accuracy of argmax(probs row i) against labels[i]; labels below 0 (unconditional samples) are skipped. NaN if none count. */
    public static double compute(float[] probs, int n, int k, int[] labels) {
        if ((long) n * k != probs.length || labels == null || labels.length != n)
            throw new IllegalArgumentException("ClassConsistency: need " + n + " rows of " + k + " probabilities and " + n + " labels");
        int hit = 0, counted = 0;
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0) continue;
            if (labels[i] >= k)
                throw new IllegalArgumentException("ClassConsistency: label " + labels[i] + " at " + i + " is outside the classifier's " + k + " classes");
            int best = 0;
            for (int c = 1; c < k; c++) if (probs[i * k + c] > probs[i * k + best]) best = c;
            counted++;
            if (best == labels[i]) hit++;
        }
        return counted == 0 ? Double.NaN : (double) hit / counted;
    }
}
