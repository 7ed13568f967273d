// Host launchers of the recurrent kernels (the LSTM cell; the GRU and Elman RNN cells; the
// whole-sequence LSTM, GRU and RNNs): check the params (touching no GPU), then launch on `stream`. No
// torch, no Python.
#pragma once

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "recurrent/params.h"

namespace seqops {

Status check_lstm_cell_forward(const LstmCellForwardParams& params);
Status check_lstm_cell_backward(const LstmCellBackwardParams& params);

Status lstm_cell_forward(const LstmCellForwardParams& params, cudaStream_t stream);
Status lstm_cell_backward(const LstmCellBackwardParams& params, cudaStream_t stream);

Status check_hidden_cell_forward(const HiddenCellForwardParams& params);
Status check_hidden_cell_backward(const HiddenCellBackwardParams& params);

Status hidden_cell_forward(const HiddenCellForwardParams& params, cudaStream_t stream);
Status hidden_cell_backward(const HiddenCellBackwardParams& params, cudaStream_t stream);

// The whole-sequence LSTM (one cooperative launch a layer and direction): refused with a
// bad argument, before any launch, where the GPU cannot hold the plan (plan.h).
Status check_lstm_sequence_forward(const LstmSequenceForwardParams& params);
Status check_lstm_sequence_backward(const LstmSequenceBackwardParams& params);

Status lstm_sequence_forward(const LstmSequenceForwardParams& params, cudaStream_t stream);
Status lstm_sequence_backward(const LstmSequenceBackwardParams& params, cudaStream_t stream);

// The whole-sequence GRU and RNNs, likewise.
Status check_hidden_sequence_forward(const HiddenSequenceForwardParams& params);
Status check_hidden_sequence_backward(const HiddenSequenceBackwardParams& params);

Status hidden_sequence_forward(const HiddenSequenceForwardParams& params, cudaStream_t stream);
Status hidden_sequence_backward(const HiddenSequenceBackwardParams& params, cudaStream_t stream);

}  // namespace seqops
