fn main() {
    println!("facegan");
}
