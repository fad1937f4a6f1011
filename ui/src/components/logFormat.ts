// The separator of the packed log lines the log worker hands to LogView (a control character
// that a log line never needs to show).
export const SEP = "\u0001";
