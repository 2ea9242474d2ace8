/**
 * Training: {@link dev.biflow.engine.optim.AdamW} and {@link dev.biflow.engine.optim.SGD} (PyTorch's update
 * rules, in place, with named state for exact resume), {@link dev.biflow.engine.optim.LrSchedule},
 * {@link dev.biflow.engine.optim.GradClip} and {@link dev.biflow.engine.optim.Ema}.
 */
package dev.biflow.engine.optim;
