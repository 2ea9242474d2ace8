/** The tensor + reverse-mode autograd engine: tensors, ops with their gradients, CPU kernels, nn, optim, io. */
package dev.biflow.engine;
