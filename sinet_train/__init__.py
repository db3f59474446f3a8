"""sinet_train: the SINet training recipe (paper Sec. 4.2 and the released code), on one GPU or many."""
